//! Choosing the device: a real GPU through wgpu when asked for (or found, with `auto`), else the
//! fastest CPU backend. A wgpu device that is a software rasterizer is not called a GPU.

use burn::tensor::{Device, DeviceKind};

use crate::TrainError;
use crate::config::Backend;

/// The device a run uses and a line saying what it is.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    pub device: Device,
    pub backend: Backend,
    pub description: String,
}

/// The CPU backend `auto` falls back to (see BENCHMARKS.md for the measurements behind it).
pub const FASTEST_CPU: Backend = Backend::Flex;

/// Resolves `backend` to a device. `wgpu` takes any adapter wgpu offers, software ones included,
/// and fails with a clear error when there is none; `auto` takes wgpu only for a real GPU.
pub fn select(backend: Backend) -> Result<SelectedDevice, TrainError> {
    match backend {
        Backend::Flex => Ok(cpu(Backend::Flex, "flex (CPU)".into())),
        Backend::Ndarray => Ok(cpu(Backend::Ndarray, "ndarray (CPU)".into())),
        Backend::Wgpu => {
            let device = init_wgpu().map_err(TrainError::Backend)?;
            let description = describe_wgpu(&device);
            Ok(SelectedDevice {
                device,
                backend: Backend::Wgpu,
                description,
            })
        }
        Backend::Auto => match init_wgpu() {
            Ok(device) if is_real_gpu(&device) => {
                let description = format!("auto: {}", describe_wgpu(&device));
                Ok(SelectedDevice {
                    device,
                    backend: Backend::Wgpu,
                    description,
                })
            }
            Ok(device) => Ok(cpu(
                FASTEST_CPU,
                format!(
                    "auto: flex (CPU); wgpu offers only {}, which is not a GPU",
                    adapter_name(&device)
                ),
            )),
            Err(reason) => Ok(cpu(
                FASTEST_CPU,
                format!("auto: flex (CPU); no wgpu adapter ({reason})"),
            )),
        },
    }
}

fn cpu(backend: Backend, description: String) -> SelectedDevice {
    #[allow(deprecated)] // ndarray stays selectable for comparison
    let device = match backend {
        Backend::Ndarray => Device::ndarray(),
        _ => Device::flex(),
    };
    SelectedDevice {
        device,
        backend,
        description,
    }
}

fn init_wgpu() -> Result<Device, String> {
    // Initialising twice in one process is an error; reuse the runtime then.
    static WGPU: std::sync::OnceLock<Result<Device, String>> = std::sync::OnceLock::new();
    WGPU.get_or_init(|| {
        std::panic::catch_unwind(|| {
            let options = Device::wgpu_options().device_kind(DeviceKind::DefaultDevice);
            // On Linux compute runs on Vulkan; probing GL as well only adds EGL noise.
            #[cfg(target_os = "linux")]
            let options = options.graphics_api(burn::tensor::wgpu::WgpuBackend::Vulkan);
            options
                .init()
                .map_err(|e| format!("wgpu could not start: {e}"))
        })
        .unwrap_or_else(|_| Err("wgpu could not start (it panicked while probing adapters)".into()))
    })
    .clone()
}

fn adapter_name(device: &Device) -> String {
    device
        .identity()
        .map_or_else(|| "an unnamed adapter".into(), |id| id.name)
}

fn is_real_gpu(device: &Device) -> bool {
    device.identity().is_some_and(|id| id.physical.is_some())
}

fn describe_wgpu(device: &Device) -> String {
    let kind = if is_real_gpu(device) {
        "GPU"
    } else {
        "software adapter, not a GPU"
    };
    format!("wgpu on {} ({kind})", adapter_name(device))
}
