//! The new head grafted onto a backbone: a linear layer, an MLP (linear + ReLU per hidden layer,
//! then a linear layer to the classes), or the family's own classification head (its transform,
//! such as RoBERTa's dense + tanh, then a linear layer), with dropout before each layer while
//! training.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor, TensorData, activation};
use graft_model::{HeadTransform, NativeHead};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::config::{HeadKind, HeadSection};

/// What a head looks like, as stored in a run folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadSpec {
    pub kind: HeadKind,
    pub input: usize,
    pub hidden: Vec<usize>,
    pub output: usize,
    pub dropout: f64,
    /// `kind = "native"`: the family's head, whose transform comes before `layers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<NativeHead>,
}

impl HeadSpec {
    pub fn new(
        section: &HeadSection,
        input: usize,
        output: usize,
        native: Option<NativeHead>,
    ) -> Self {
        Self {
            kind: section.kind,
            input,
            hidden: section.hidden.clone(),
            output,
            dropout: section.dropout,
            native,
        }
    }

    /// Embedding training's: no layers, the features are the outputs.
    pub fn none(input: usize) -> Self {
        Self {
            kind: HeadKind::None,
            input,
            hidden: Vec::new(),
            output: input,
            dropout: 0.0,
            native: None,
        }
    }

    /// `(in, out)` of each layer, in order.
    pub fn layer_sizes(&self) -> Vec<(usize, usize)> {
        if self.kind == HeadKind::None {
            return Vec::new();
        }
        let widths: Vec<usize> = std::iter::once(self.input)
            .chain(self.hidden.iter().copied())
            .chain(std::iter::once(self.output))
            .collect();
        widths.windows(2).map(|w| (w[0], w[1])).collect()
    }

    /// A new head, from `seed`, so a run's seed fixes it whatever else the process does. Graft's
    /// own layers start as PyTorch's `nn.Linear` (weights and biases uniform in
    /// ±1/sqrt(fan_in)). A native head starts as transformers initialises the family's head
    /// (`_init_weights`): weights normal with std 0.02 (ModernBERT's classifier: truncated at
    /// three deviations, std 1/sqrt(width)), zero biases, unit norm scales. With the same start,
    /// a native run's loss curve is transformers' (BENCHMARKS.md, section 16).
    pub fn init(&self, seed: u64, device: &Device) -> Head {
        let mut rng = StdRng::seed_from_u64(seed);
        let transform =
            self.native
                .as_ref()
                .and_then(|n| n.transform.as_ref())
                .map(|spec| {
                    let mut transform = spec.init(device);
                    let [input, output] = transform.dense.weight.dims();
                    let values: Vec<f32> = (0..input * output)
                        .map(|_| 0.02 * standard_normal(&mut rng))
                        .collect();
                    transform.dense.weight =
                        Param::from_data(TensorData::new(values, [input, output]), device);
                    transform.dense.bias =
                        transform.dense.bias.take().map(|_| {
                            Param::from_data(TensorData::zeros::<f32, _>([output]), device)
                        });
                    transform
                });
        let modernbert = self
            .native
            .as_ref()
            .is_some_and(|n| n.model.starts_with("ModernBert"));
        let mut layers = Vec::new();
        for (input, output) in self.layer_sizes() {
            let mut linear = LinearConfig::new(input, output).init(device);
            let (weight, bias): (Vec<f32>, Vec<f32>) = if self.native.is_some() {
                let std = if modernbert {
                    1.0 / (input as f32).sqrt()
                } else {
                    0.02
                };
                let weight = (0..input * output)
                    .map(|_| {
                        loop {
                            let z = standard_normal(&mut rng);
                            if !modernbert || z.abs() <= 3.0 {
                                break std * z;
                            }
                        }
                    })
                    .collect();
                (weight, vec![0.0; output])
            } else {
                let bound = 1.0 / (input as f32).sqrt();
                let weight = (0..input * output)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                let bias = (0..output)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                (weight, bias)
            };
            linear.weight = Param::from_data(TensorData::new(weight, [input, output]), device);
            linear.bias = Some(Param::from_data(TensorData::new(bias, [output]), device));
            layers.push(linear);
        }
        Head {
            transform,
            layers,
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

/// A draw from N(0, 1) (Box-Muller).
fn standard_normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

#[derive(Module, Debug)]
pub struct Head {
    pub transform: Option<HeadTransform>,
    pub layers: Vec<Linear>,
    pub dropout: Dropout,
}

impl Head {
    /// The number of outputs (classes, targets); 0 for a head without layers.
    pub fn output_size(&self) -> usize {
        self.layers.last().map_or(0, |layer| layer.weight.dims()[1])
    }

    /// The same head with its outputs mapped to `output · scale + shift` (folded into the last
    /// layer), e.g. to undo target standardization.
    pub fn rescale_output(mut self, scale: f64, shift: f64) -> Self {
        let last = self.layers.last_mut().expect("a head has a layer");
        last.weight = last.weight.clone().map(|w| w * scale);
        if let Some(bias) = last.bias.take() {
            last.bias = Some(bias.map(|b| b * scale + shift));
        }
        self
    }

    /// Logits over the last dimension: `[batch, classes]` from pooled features `[batch, input]`,
    /// or `[batch, seq, classes]` from per-token states `[batch, seq, input]` (a token-level
    /// head: the same layers on every token). A head without layers passes the features on.
    pub fn forward<const D: usize>(&self, features: Tensor<D>) -> Tensor<D> {
        if self.layers.is_empty() {
            return features;
        }
        let last = self.layers.len() - 1;
        // Features in another float type (a half-precision backbone's) are read in the head's.
        let mut x = features.cast(self.layers[0].weight.val().dtype());
        if let Some(transform) = &self.transform {
            if transform.dropout_before {
                x = self.dropout.forward(x);
            }
            x = transform.forward(x);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(self.dropout.forward(x));
            if i < last {
                x = activation::relu(x);
            }
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor};

    use super::*;
    use crate::config::HeadSection;

    /// A head over per-token states `[batch, seq, input]` is the same head on every token.
    #[test]
    fn a_head_runs_over_pooled_rows_and_over_tokens() {
        #[allow(deprecated)]
        let device = Device::flex();
        let section = HeadSection {
            kind: crate::config::HeadKind::Mlp,
            hidden: vec![5],
            dropout: 0.0,
            ..Default::default()
        };
        let head = HeadSpec::new(&section, 4, 3, None).init(7, &device);
        let tokens = Tensor::<3>::random(
            [2, 6, 4],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let per_token = head.forward(tokens.clone());
        assert_eq!(per_token.dims(), [2, 6, 3]);
        let rows = head.forward(tokens.reshape([12, 4]));
        let diff = (per_token.reshape([12, 3]) - rows)
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(diff <= 1e-6, "{diff}");
    }
}
