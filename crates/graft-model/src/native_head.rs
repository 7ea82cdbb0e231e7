//! The text families' own sequence-classification heads, as transformers'
//! `<Family>ForSequenceClassification` builds them: how the last hidden state is pooled, the
//! transform before the classifier (RoBERTa's dense + tanh, DistilBERT's pre_classifier + ReLU,
//! DeBERTa's ContextPooler, ModernBERT's dense + activation + norm, ...) and the upstream names of
//! its tensors. Each architecture describes its head ([`crate::Architecture::native_head`]); this
//! file builds, loads and runs the transform. The classifier itself is a plain linear layer.

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::bert::HiddenAct;
use crate::pooling::Pooling;
use crate::{ModelError, ModelFolder, weights};

/// A family's sequence classifier: what it pools, its transform and where its tensors live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NativeHead {
    /// transformers' class (`RobertaForSequenceClassification`).
    pub model: String,
    /// Where the encoder's tensors go in that class (`roberta.`).
    pub prefix: String,
    /// How the last hidden state is pooled (the first token, or ModernBERT's mean).
    pub pooling: Pooling,
    /// BERT: the first token goes through the encoder's pretrained pooler.
    pub use_pooler: bool,
    /// The layers between the pooled state and the classifier, if any.
    pub transform: Option<TransformSpec>,
    /// The upstream name of the final linear layer (`classifier.out_proj`).
    pub classifier: String,
}

/// `dense → activation (→ LayerNorm)`, with dropout before `dense` where the family has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformSpec {
    /// The upstream name of the dense layer (`classifier.dense`, `pre_classifier`).
    pub dense: String,
    pub width: usize,
    pub dense_bias: bool,
    pub activation: HiddenAct,
    /// The upstream name of the LayerNorm after the activation (ModernBERT's `head.norm`).
    pub norm: Option<String>,
    pub norm_bias: bool,
    pub norm_eps: f64,
    /// Dropout on the pooled state before `dense` (RoBERTa, MPNet, ELECTRA, DeBERTa).
    pub dropout_before: bool,
}

/// The transform's layers, named `dense` and `norm` whatever the family calls them.
#[derive(Module, Debug)]
pub struct HeadTransform {
    pub dense: Linear,
    pub norm: Option<LayerNorm>,
    #[module(skip)]
    pub activation: HiddenAct,
    #[module(skip)]
    pub dropout_before: bool,
}

impl TransformSpec {
    /// `dense` (with a bias) and the activation, without a norm.
    pub fn dense(dense: &str, width: usize, activation: HiddenAct, dropout_before: bool) -> Self {
        Self {
            dense: dense.into(),
            width,
            dense_bias: true,
            activation,
            norm: None,
            norm_bias: false,
            norm_eps: 0.0,
            dropout_before,
        }
    }

    /// The layers with burn's default initialization (callers set the values they want).
    pub fn init(&self, device: &Device) -> HeadTransform {
        HeadTransform {
            dense: LinearConfig::new(self.width, self.width)
                .with_bias(self.dense_bias)
                .init(device),
            norm: self.norm.as_ref().map(|_| {
                LayerNormConfig::new(self.width)
                    .with_epsilon(self.norm_eps)
                    .with_bias(self.norm_bias)
                    .init(device)
            }),
            activation: self.activation,
            dropout_before: self.dropout_before,
        }
    }

    /// The upstream name of a path inside [`HeadTransform`] (`dense.weight` →
    /// `classifier.dense.weight`).
    pub fn upstream_name(&self, path: &str) -> String {
        match (path.split_once('.'), &self.norm) {
            (Some(("dense", rest)), _) => format!("{}.{rest}", self.dense),
            (Some(("norm", rest)), Some(norm)) => format!("{norm}.{rest}"),
            _ => path.to_string(),
        }
    }
}

impl HeadTransform {
    /// The transform over the last dimension: pooled rows, or per-token states.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let x = self.activation.apply(self.dense.forward(x));
        match &self.norm {
            Some(norm) => norm.forward(x),
            None => x,
        }
    }
}

impl NativeHead {
    /// The family's token classifier (`<Family>ForTokenClassification`) beside this sequence
    /// classifier: the same encoder prefix, every token's last hidden state through dropout and
    /// `classifier`, with no pooler; ModernBERT keeps its `head` transform before it, as upstream.
    pub fn for_tokens(&self) -> Self {
        let keeps_transform = self.model.starts_with("ModernBert");
        Self {
            model: self
                .model
                .replace("ForSequenceClassification", "ForTokenClassification"),
            prefix: self.prefix.clone(),
            pooling: self.pooling,
            use_pooler: false,
            transform: self.transform.clone().filter(|_| keeps_transform),
            classifier: "classifier".into(),
        }
    }

    /// The head's top-level modules, as PEFT's `modules_to_save` names them (`classifier`;
    /// DistilBERT's `pre_classifier` and `classifier`; ModernBERT's `head` and `classifier`).
    pub fn modules(&self) -> Vec<String> {
        let transform = self
            .transform
            .iter()
            .flat_map(|t| std::iter::once(t.dense.as_str()).chain(t.norm.as_deref()));
        let mut modules: Vec<String> = Vec::new();
        for name in transform.chain(std::iter::once(self.classifier.as_str())) {
            let top = name.split('.').next().unwrap_or(name).to_string();
            if !modules.contains(&top) {
                modules.push(top);
            }
        }
        modules
    }

    /// The transform saved in `folder`'s weights under its upstream names, if they are all there.
    pub fn saved_transform(
        &self,
        folder: &ModelFolder,
        device: &Device,
    ) -> Result<Option<HeadTransform>, ModelError> {
        let Some(spec) = &self.transform else {
            return Ok(None);
        };
        let mut transform = spec.init(device);
        let names = weights::param_names(&transform, |p| spec.upstream_name(p));
        let path = folder.weights_path();
        let index = folder.weights_index()?;
        if !names
            .iter()
            .all(|(_, name)| index.tensors.contains_key(name))
        {
            return Ok(None);
        }
        weights::load_renamed(&mut transform, &path, &names, &[])?;
        Ok(Some(transform))
    }

    /// The classifier saved in `folder`'s weights (`classifier.out_proj`), if it is there.
    pub fn saved_classifier(
        &self,
        folder: &ModelFolder,
        device: &Device,
    ) -> Result<Option<Linear>, ModelError> {
        let index = folder.weights_index()?;
        let weight = format!("{}.weight", self.classifier);
        let Some(info) = index.tensors.get(&weight) else {
            return Ok(None);
        };
        let [output, input] = info.shape[..] else {
            return Err(ModelError::CorruptWeights {
                path: folder.weights_path(),
                message: format!(
                    "tensor `{weight}` has shape {:?}, not [out, in]",
                    info.shape
                ),
            });
        };
        let bias = index
            .tensors
            .contains_key(&format!("{}.bias", self.classifier));
        let mut linear = LinearConfig::new(input, output)
            .with_bias(bias)
            .init(device);
        weights::check_sizes(&linear, &folder.weights_path())?;
        let names = weights::param_names(&linear, |p| format!("{}.{p}", self.classifier));
        weights::load_renamed(&mut linear, &folder.weights_path(), &names, &[])?;
        Ok(Some(linear))
    }
}

impl NativeHead {
    /// RoBERTa's `ClassificationHead` (also MPNet's and ELECTRA's): on the first token, dropout,
    /// `classifier.dense`, the activation, dropout, `classifier.out_proj`.
    pub fn dense_out_proj(model: &str, prefix: &str, width: usize, activation: HiddenAct) -> Self {
        Self {
            model: model.into(),
            prefix: prefix.into(),
            pooling: Pooling::Cls,
            use_pooler: false,
            transform: Some(TransformSpec::dense(
                "classifier.dense",
                width,
                activation,
                true,
            )),
            classifier: "classifier.out_proj".into(),
        }
    }
}

/// The activation a config names, or an error naming the key.
pub(crate) fn activation(
    folder: &ModelFolder,
    key: &str,
    name: &str,
) -> Result<HiddenAct, ModelError> {
    HiddenAct::parse(name).ok_or_else(|| ModelError::Config {
        path: folder.config_path(),
        message: format!("{key} \"{name}\" is not supported (gelu, gelu_new, relu, tanh)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transform_paths_map_to_the_family_names() {
        let mut head = NativeHead::dense_out_proj("M", "m.", 4, HiddenAct::Tanh);
        let spec = head.transform.as_mut().unwrap();
        assert_eq!(
            spec.upstream_name("dense.weight"),
            "classifier.dense.weight"
        );
        spec.norm = Some("head.norm".into());
        assert_eq!(spec.upstream_name("norm.weight"), "head.norm.weight");
        assert_eq!(head.modules(), ["classifier", "head"]);
        let spec = head.transform.as_mut().unwrap();
        spec.dense = "pre_classifier".into();
        spec.norm = None;
        head.classifier = "classifier".into();
        assert_eq!(head.modules(), ["pre_classifier", "classifier"]);
    }
}
