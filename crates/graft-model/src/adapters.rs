//! Linear layers as PEFT computes them while a LoRA adapter trains: `base(x) + B(A(dropout(x)))
//! · scale`, with dropout on the adapter's input only (`lora_dropout`). burn's LoRA adapts the
//! weight itself (`W + scale·A·B`), which is exact whenever there is no such dropout, so
//! [`linear`] defers to the layer unless a backbone is running with adapter dropout on an autodiff
//! device (training). Every architecture calls [`linear`] for its linear layers; the dropout is
//! set for the duration of one forward pass by [`with_dropout`].

use std::cell::Cell;

use burn::nn::{DropoutConfig, Linear};
use burn::tensor::Tensor;
use burn::tensor::module;

thread_local! {
    static DROPOUT: Cell<f64> = const { Cell::new(0.0) };
}

/// Runs `f` with dropout `p` on the inputs of LoRA-adapted layers.
pub fn with_dropout<T>(p: f64, f: impl FnOnce() -> T) -> T {
    let previous = DROPOUT.with(|d| d.replace(p));
    let out = f();
    DROPOUT.with(|d| d.set(previous));
    out
}

/// `layer(x)`, with the adapter's input dropout while training (see the module docs).
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let p = DROPOUT.with(Cell::get);
    match layer.weight.adapter() {
        Some(adapter) if p > 0.0 && x.device().is_autodiff() => {
            let bias = layer.bias.as_ref().map(|b| b.val());
            let base = module::linear(x.clone(), layer.weight.base(), bias);
            let dropped = DropoutConfig::new(p).init().forward(x);
            let down = module::linear(dropped, adapter.a.val(), None);
            base + module::linear(down, adapter.b.val(), None).mul_scalar(adapter.scale)
        }
        _ if graft_kernels::serves(&x.device()) => {
            graft_kernels::linear(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
        }
        _ => layer.forward(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Lora, Module, ModuleMapper, Param};
    use burn::nn::LinearConfig;
    use burn::tensor::{Device, TensorData};

    /// Sets every LoRA factor to the identity.
    #[derive(Default)]
    struct IdentityFactors(Vec<String>);

    impl ModuleMapper for IdentityFactors {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.0.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.0.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if !self.0.iter().any(|segment| segment == "lora") {
                return param;
            }
            param.map(|t| {
                let shape = t.shape();
                Tensor::<2>::eye(t.dims()[0], &t.device()).reshape(shape)
            })
        }
    }

    /// Rank n, identity factors, scale 1, a zero base weight and a bias of 1: the layer computes
    /// `1 + adapter(x)`, so with dropout each output is 1 (dropped) or `1 + x / (1 - p)`.
    fn layer(n: usize, device: &Device) -> Linear {
        let mut layer = LinearConfig::new(n, n).init(device);
        layer.weight = Param::from_data(TensorData::new(vec![0.0f32; n * n], [n, n]), device);
        layer.bias = Some(Param::from_data(
            TensorData::new(vec![1.0f32; n], [n]),
            device,
        ));
        layer
            .apply_lora(Lora::new(n, n as f64))
            .map(&mut IdentityFactors::default())
    }

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().unwrap()
    }

    #[test]
    fn dropout_falls_on_the_adapter_input_only_while_training() {
        let n = 64;
        let device = Device::flex().autodiff();
        let layer = layer(n, &device);
        let x = Tensor::<2>::ones([4, n], &device);
        // No dropout: exactly burn's merged weight.
        let plain = values(with_dropout(0.0, || linear(&layer, x.clone())));
        assert_eq!(plain, values(layer.forward(x.clone())));
        assert!(plain.iter().all(|&v| v == 2.0));
        // p = 0.5: the base path (the bias) stays; the adapter's input is dropped or doubled.
        let dropped = values(with_dropout(0.5, || linear(&layer, x.clone())));
        assert!(dropped.iter().all(|&v| v == 1.0 || v == 3.0), "{dropped:?}");
        assert!(dropped.contains(&1.0) && dropped.contains(&3.0));
        // Outside autodiff (evaluation) there is no dropout.
        #[allow(deprecated)]
        let eval = Device::flex();
        let layer = self::layer(n, &eval);
        let x = Tensor::<2>::ones([4, n], &eval);
        assert!(
            values(with_dropout(0.5, || linear(&layer, x)))
                .iter()
                .all(|&v| v == 2.0)
        );
    }
}
