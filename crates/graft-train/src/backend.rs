//! Choosing the device: a real GPU through wgpu when asked for (or found, with `auto`), else the
//! fastest CPU backend. A wgpu device that is a software rasterizer is not called a GPU.

use burn::tensor::{Device, DeviceKind};

use crate::config::Backend;
use crate::error::TrainError;

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

/// The devices data parallel adds to `selected` for `devices` in all: on a GPU, the next GPUs
/// wgpu offers (an error naming how many it has when they are too few); on the CPU or a software
/// adapter, the same device again, whose shards then run one after another, which checks the
/// arithmetic of data parallel training but is no faster.
pub fn replicas(selected: &SelectedDevice, devices: usize) -> Result<Vec<Device>, TrainError> {
    if devices <= 1 {
        return Ok(Vec::new());
    }
    if selected.backend != Backend::Wgpu || !is_real_gpu(&selected.device) {
        return Ok(vec![selected.device.clone(); devices - 1]);
    }
    (1..devices)
        .map(|index| {
            let gpu = std::panic::catch_unwind(|| {
                Device::wgpu_options()
                    .device_kind(DeviceKind::DiscreteGpu(index))
                    .init()
                    .ok()
            })
            .ok()
            .flatten();
            gpu.filter(is_real_gpu).ok_or_else(|| {
                TrainError::Backend(format!(
                    "[train] devices = {devices}, but wgpu offers only {index} GPU(s)"
                ))
            })
        })
        .collect()
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

/// The variable that sets how hard cubecl (wgpu) autotunes its kernels.
pub const AUTOTUNE_LEVEL: &str = "CUBECL_AUTOTUNE_LEVEL";

/// The autotune level graft sets when the user has not: cubecl autotunes every new kernel key by
/// compiling and timing each candidate, which on a fresh machine is most of a short run (on an
/// H200 a frozen MiniLM run took 60 s at cubecl's default level and 18 s at `minimal`, with the
/// same losses; BENCHMARKS.md). `CUBECL_AUTOTUNE_LEVEL=balanced` restores cubecl's default.
pub fn default_autotune_level(current: Option<&std::ffi::OsStr>) -> Option<&'static str> {
    current.is_none().then_some("minimal")
}

/// Sets [`AUTOTUNE_LEVEL`] to [`default_autotune_level`] when it is unset. It sets an environment
/// variable, so it must run before any other thread starts: call it first thing in `main`.
pub fn prefer_quick_autotune() {
    if let Some(level) = default_autotune_level(std::env::var_os(AUTOTUNE_LEVEL).as_deref()) {
        // SAFETY: called before any other thread exists, so nothing reads the environment
        // concurrently.
        unsafe { std::env::set_var(AUTOTUNE_LEVEL, level) };
    }
}

/// On a machine without a desktop session `XDG_RUNTIME_DIR` is unset, and the Wayland client
/// library that Vulkan drivers load prints `error: XDG_RUNTIME_DIR is invalid or not set` while
/// wgpu probes adapters, although nothing is wrong. This points the variable at a private
/// per-user folder (mode 0700) when it is unset or not a folder, which silences that probe.
///
/// It sets an environment variable, so it must run before any other thread starts: call it first
/// thing in `main`.
pub fn prepare_headless_runtime() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|dir| std::path::Path::new(&dir).is_dir()) {
        return;
    }
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    let dir = std::env::temp_dir().join(format!("graft-runtime-{uid}"));
    let private = std::fs::create_dir_all(&dir).is_ok()
        && std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).is_ok()
        && std::fs::metadata(&dir).is_ok_and(|m| m.uid() == uid);
    if private {
        // SAFETY: called before any other thread exists (see above), so nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autotune_defaults_to_minimal_unless_the_user_chose() {
        assert_eq!(default_autotune_level(None), Some("minimal"));
        let chosen = std::ffi::OsString::from("balanced");
        assert_eq!(default_autotune_level(Some(&chosen)), None);
    }
}
