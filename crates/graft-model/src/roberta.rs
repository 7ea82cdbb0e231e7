//! RoBERTa-family encoders (`model_type` `roberta`, `xlm-roberta`, `camembert`) from a Hugging Face
//! folder. Their layers are BERT's (the same `config.json` fields and tensor tree, see
//! [`crate::bert`]); what makes them RoBERTa is the embeddings: position ids count the real tokens
//! from `pad_token_id + 1` and skip padding (transformers' `create_position_ids_from_input_ids`),
//! so `max_position_embeddings` is the longest input plus `pad_token_id + 1`. Tokenizers are the
//! folder's `tokenizer.json` (byte-level BPE for RoBERTa, Unigram for XLM-R and CamemBERT), whose
//! post-processor adds `<s> ... </s>`.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use serde_json::Value;

use crate::backbone::{Architecture, ExportTarget, Inputs, Preprocessing, TextTransform};
use crate::bert::HiddenAct;
use crate::bert::{self, BertConfig, BertEmbeddings, BertEncoder, BertPooler};
use crate::weights::{self, WeightsIndex};
use crate::{ModelError, ModelFolder, NativeHead, PoolingOptions};

/// Which member of the family a folder holds (its `model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Roberta,
    XlmRoberta,
    Camembert,
}

impl Family {
    fn of(config: &Value) -> Option<Self> {
        match config.get("model_type").and_then(Value::as_str) {
            Some("roberta") => Some(Self::Roberta),
            Some("xlm-roberta") => Some(Self::XlmRoberta),
            Some("camembert") => Some(Self::Camembert),
            Some(_) => None,
            None => {
                let class = config
                    .get("architectures")
                    .and_then(Value::as_array)
                    .and_then(|list| list.first())
                    .and_then(Value::as_str)?;
                [
                    ("XLMRoberta", Self::XlmRoberta),
                    ("Roberta", Self::Roberta),
                    ("Camembert", Self::Camembert),
                ]
                .into_iter()
                .find(|(prefix, _)| class.starts_with(prefix))
                .map(|(_, family)| family)
            }
        }
    }

    fn model_type(self) -> &'static str {
        match self {
            Self::Roberta => "roberta",
            Self::XlmRoberta => "xlm-roberta",
            Self::Camembert => "camembert",
        }
    }

    /// transformers' sequence classifier class.
    fn classifier_class(self) -> &'static str {
        match self {
            Self::Roberta => "RobertaForSequenceClassification",
            Self::XlmRoberta => "XLMRobertaForSequenceClassification",
            Self::Camembert => "CamembertForSequenceClassification",
        }
    }

    /// transformers' base model class.
    fn model_class(self) -> &'static str {
        match self {
            Self::Roberta => "RobertaModel",
            Self::XlmRoberta => "XLMRobertaModel",
            Self::Camembert => "CamembertModel",
        }
    }
}

/// What a `...ForSequenceClassification`, `...ForMaskedLM` or bare checkpoint puts before the
/// encoder's names.
const PREFIXES: [&str; 2] = ["roberta.", "model."];

/// The encoder. Field names follow the upstream tensor names.
#[derive(Module, Debug)]
pub struct Roberta {
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
    pub pooler: Option<BertPooler>,
    /// `pad_token_id`: position ids start after it.
    #[module(skip)]
    pub padding_idx: usize,
    #[module(skip)]
    pub family: Family,
}

impl Roberta {
    /// The last hidden state `[batch, seq, hidden]`. `attention_mask` is 1 for tokens, 0 for
    /// padding; `None` means no row is padded.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        let positions = position_ids(&input_ids, attention_mask.as_ref(), self.padding_idx);
        let x = self
            .embeddings
            .forward_at(input_ids, token_type_ids, positions);
        self.encoder.forward(x, attention_mask)
    }

    fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }
}

/// transformers' `create_position_ids_from_input_ids`: tokens other than `padding_idx` are
/// numbered `padding_idx + 1, + 2, ...`, and a token whose id is `padding_idx` gets
/// `padding_idx`, wherever it stands (MPNet's index is 1 whatever pads, so an `[UNK]` of id 1
/// keeps position 1). Rows padded past `attention_mask` count as padding whatever id pads them.
pub(crate) fn position_ids(
    input_ids: &Tensor<2, Int>,
    attention_mask: Option<&Tensor<2, Int>>,
    padding_idx: usize,
) -> Tensor<2, Int> {
    let mut counted = input_ids.clone().not_equal_elem(padding_idx as i64).int();
    if let Some(mask) = attention_mask {
        counted = counted * mask.clone();
    }
    counted.clone().cumsum(1) * counted + padding_idx as i64
}

fn read_config(folder: &ModelFolder) -> Result<BertConfig, ModelError> {
    let path = folder.config_path();
    let mut config = BertConfig::from_file(&path)?;
    // RobertaConfig's own default, where BERT's is 0.
    if folder
        .config
        .get("pad_token_id")
        .is_none_or(|v| v.is_null())
    {
        config.pad_token_id = 1;
    }
    if config.max_position_embeddings <= config.pad_token_id + 1 {
        return Err(ModelError::Config {
            path,
            message: format!(
                "max_position_embeddings {} leaves no position after pad_token_id {}",
                config.max_position_embeddings, config.pad_token_id
            ),
        });
    }
    Ok(config)
}

impl Architecture for Roberta {
    fn name() -> &'static str {
        "roberta"
    }

    fn detects(config: &Value) -> bool {
        Family::of(config).is_some()
    }

    fn preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
        let config = read_config(folder)?;
        Ok(Preprocessing::Text(TextTransform {
            tokenizer: folder.tokenizer_path(),
            vocab_size: config.vocab_size,
            max_positions: config.max_position_embeddings - config.pad_token_id - 1,
            has_pooler: bert::has_pooler(&folder.weights_index()?, &PREFIXES),
        }))
    }

    fn native_head(folder: &ModelFolder) -> Result<Option<NativeHead>, ModelError> {
        let config = read_config(folder)?;
        let family = Family::of(&folder.config).unwrap_or(Family::Roberta);
        Ok(Some(NativeHead::dense_out_proj(
            family.classifier_class(),
            "roberta.",
            config.hidden_size,
            HiddenAct::Tanh,
        )))
    }

    fn load(folder: &ModelFolder, _classifier: bool, device: &Device) -> Result<Self, ModelError> {
        let config = read_config(folder)?;
        let family = Family::of(&folder.config).unwrap_or(Family::Roberta);
        let weights_path = folder.weights_path();
        let index = WeightsIndex::read(&weights_path)?;
        let bert = config.init(bert::has_pooler(&index, &PREFIXES), device);
        let mut model = Roberta {
            embeddings: bert.embeddings,
            encoder: bert.encoder,
            pooler: bert.pooler,
            padding_idx: config.pad_token_id,
            family,
        };
        weights::check_sizes(&model, &weights_path)?;
        let names = weights::param_names(&model, bert::upstream_name);
        weights::load_renamed(&mut model, &weights_path, &names, &PREFIXES)?;
        Ok(model)
    }

    fn describe(&self) -> String {
        format!(
            "{} ({} layers)",
            self.family.model_type(),
            self.num_layers()
        )
    }

    fn feature_size(&self) -> usize {
        self.embeddings.word_embeddings.weight.dims()[1]
    }

    fn forward_features(&self, inputs: Inputs, pooling: PoolingOptions) -> Tensor<2> {
        bert::pool_tokens(self, inputs, self.pooler.as_ref(), pooling)
    }

    fn forward_tokens(&self, inputs: Inputs) -> Option<Tensor<3>> {
        let (input_ids, token_type_ids, attention_mask) = inputs.into_text();
        Some(self.forward(input_ids, token_type_ids, attention_mask))
    }

    fn upstream_name(&self, path: &str) -> String {
        bert::upstream_name(path)
    }

    fn block_of(&self, path: &str) -> usize {
        self.encoder.block_of(path)
    }

    fn num_blocks(&self) -> usize {
        self.num_layers() + 1
    }

    fn lora_targets(&self) -> &'static [&'static str] {
        &["query", "value"]
    }

    /// Sentence-transformers only: transformers' `RobertaForSequenceClassification` head is dense +
    /// tanh + out_proj on `<s>`, not BERT's pooler + linear, so a pooler run has no such export.
    fn exports(&self) -> Vec<ExportTarget> {
        bert::text_exports(self.family.model_class(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn family_from_model_type_or_class() {
        assert_eq!(
            Family::of(&json!({"model_type": "xlm-roberta"})),
            Some(Family::XlmRoberta)
        );
        assert_eq!(
            Family::of(&json!({"model_type": "camembert"})),
            Some(Family::Camembert)
        );
        assert_eq!(Family::of(&json!({"model_type": "bert"})), None);
        assert_eq!(
            Family::of(&json!({"architectures": ["XLMRobertaForSequenceClassification"]})),
            Some(Family::XlmRoberta)
        );
        assert_eq!(
            Family::of(&json!({"architectures": ["RobertaModel"]})),
            Some(Family::Roberta)
        );
    }
}
