//! Mixed precision: a model's passes in f16 or bf16 while the weights it trains stay f32, as
//! PyTorch's autocast and `GradScaler` do.
//!
//! [`cast_model`] gives the model whose float tensors are cast to the precision's type. Under
//! autodiff each cast is a node of the graph, so the backward pass carries the gradients through
//! the casts back to the f32 weights (the master copy the optimizer steps); tensors that do not
//! train are cast outside the graph. The outputs are cast back to f32 before the loss. With f16,
//! whose range is small, [`LossScaler`] scales the loss up before the backward pass and the
//! gradients down after it, skipping steps whose gradients overflowed.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::Precision;
use crate::error::TrainError;

/// The float type `precision` computes in.
pub fn float_dtype(precision: Precision) -> FloatDType {
    match precision {
        Precision::F32 => FloatDType::F32,
        Precision::F16 => FloatDType::F16,
        Precision::Bf16 => FloatDType::BF16,
    }
}

/// Fails with a clear error when `device` cannot compute in `precision`.
pub fn check_supported(device: &Device, precision: Precision) -> Result<(), TrainError> {
    if precision == Precision::F32 || device.supports_dtype(float_dtype(precision)) {
        return Ok(());
    }
    Err(TrainError::Unsupported(format!(
        "precision = \"{precision}\": the device ({device:?}) has no {precision} arithmetic; \
         use f32{}",
        if precision == Precision::Bf16 {
            " or f16"
        } else {
            ""
        }
    )))
}

/// `model` with its float tensors cast to `precision`'s type (a clone for f32). Where the model
/// records gradients, the casts are recorded too, so gradients reach the original tensors.
pub fn cast_model<M: Module>(model: &M, precision: Precision) -> M {
    match precision {
        Precision::F32 => model.clone(),
        other => graft_model::cast_floats(model, float_dtype(other)),
    }
}

/// `outputs` as f32, whatever type the model computed them in.
pub fn to_f32<const D: usize>(outputs: Tensor<D>) -> Tensor<D> {
    if outputs.dtype() == burn::tensor::DType::F32 {
        outputs
    } else {
        outputs.cast(FloatDType::F32)
    }
}

/// PyTorch's `GradScaler` with its defaults: the loss is multiplied by a scale that starts at
/// 2^16, halves whenever the gradients overflow (that step is skipped) and doubles after 2000
/// steps in a row without overflow.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub scale: f64,
    /// Steps since the last overflow or growth.
    pub good_steps: usize,
}

const INITIAL_SCALE: f64 = 65536.0;
const GROWTH_FACTOR: f64 = 2.0;
const BACKOFF_FACTOR: f64 = 0.5;
const GROWTH_INTERVAL: usize = 2000;

impl LossScaler {
    /// The scaler `precision` needs: f16 only (bf16 has f32's range).
    pub fn for_precision(precision: Precision) -> Option<Self> {
        (precision == Precision::F16).then_some(Self {
            scale: INITIAL_SCALE,
            good_steps: 0,
        })
    }

    /// Divides every gradient of `model`'s tensors by the scale. Returns whether all of them
    /// are finite (one read from the device).
    pub fn unscale<M: Module>(&self, model: &M, grads: &mut GradientsParams) -> bool {
        struct Unscale<'a> {
            grads: &'a mut GradientsParams,
            factor: f64,
            /// The sum of every gradient times 0: NaN when any element is not finite.
            probe: Option<Tensor<1>>,
        }
        impl ModuleVisitor for Unscale<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some(grad) = self.grads.remove::<D>(param.id) {
                    let grad = grad * self.factor;
                    let probe = (grad.clone() * 0.0).sum();
                    self.probe = Some(match self.probe.take() {
                        Some(sum) => sum + probe,
                        None => probe,
                    });
                    self.grads.register(param.id, grad);
                }
            }
        }
        let mut visitor = Unscale {
            grads,
            factor: 1.0 / self.scale,
            probe: None,
        };
        model.visit(&mut visitor);
        visitor
            .probe
            .is_none_or(|probe| probe.into_scalar::<f32>().is_finite())
    }

    /// Moves the scale after a step whose gradients were `finite` or not.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            if self.good_steps == GROWTH_INTERVAL {
                self.scale *= GROWTH_FACTOR;
                self.good_steps = 0;
            }
        } else {
            self.scale *= BACKOFF_FACTOR;
            self.good_steps = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_backs_off_on_overflow_and_grows_after_the_interval() {
        let mut scaler = LossScaler::for_precision(Precision::F16).unwrap();
        assert!(LossScaler::for_precision(Precision::Bf16).is_none());
        scaler.update(false);
        assert_eq!(scaler.scale, 32768.0);
        for _ in 0..GROWTH_INTERVAL - 1 {
            scaler.update(true);
        }
        assert_eq!(scaler.scale, 32768.0);
        scaler.update(true);
        assert_eq!((scaler.scale, scaler.good_steps), (65536.0, 0));
    }
}
