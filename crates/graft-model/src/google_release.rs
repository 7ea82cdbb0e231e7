//! Google's original BERT and ELECTRA releases, read without TensorFlow: BERT's
//! (`bert_model.ckpt.index` + `.data-*`, `bert_config.json`, `vocab.txt`) and ELECTRA's
//! (`electra_small.index` + `.data-*`, `vocab.txt`; no config, so its sizes are read off the
//! tensors' shapes, with ELECTRA's one attention head per 64 hidden units). The checkpoint's
//! `bert/...` or `electra/...` variables are renamed to transformers' `BertModel` or
//! `ElectraModel` names (dense kernels `[in, out]` transposed to `[out, in]`, LayerNorm
//! `gamma`/`beta` to `weight`/`bias`), the config is written as `config.json`, and the WordPiece
//! vocabulary becomes the `tokenizer.json` transformers' `BertTokenizerFast` would make of it,
//! lower-casing where the release is uncased (Google names such folders `uncased_...`; an uncased
//! vocabulary holds no capital letters). Pre-training heads (`cls/...`, ELECTRA's generator and
//! discriminator head), optimizer slots and `global_step` are left out. TF Hub's BERT encoders
//! (SavedModels of TensorFlow Model Garden's `BertEncoder`: `saved_model.pb`, `variables/`,
//! `assets/vocab.txt`) are read the same way, their variables named through the SavedModel's
//! object graph. A folder converts once into graft's cache, keyed by its files' contents, and
//! opens from there as any model folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde_json::{Value, json};

use crate::ModelError;
use crate::tf_bundle::TensorBundle;
use crate::weights::{TensorBytes, serialize};

pub const CONFIG: &str = "bert_config.json";
const VOCAB: &str = "vocab.txt";

/// The releases graft reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Bert,
    Electra,
    /// A TF Hub BERT encoder SavedModel (Model Garden's `BertEncoder`).
    HubBert,
}

impl Family {
    /// The scope of the encoder's variables in the checkpoint.
    fn scope(self) -> &'static str {
        match self {
            Self::Bert => "bert/",
            Self::Electra => "electra/",
            Self::HubBert => "",
        }
    }
}

/// A TF Hub SavedModel's checkpoint and vocabulary.
const HUB_INDEX: &str = "variables/variables.index";
const HUB_VOCAB: &str = "assets/vocab.txt";
/// A variable only Model Garden's `BertEncoder` has, by the object graph's name.
const HUB_QUERY: &str = "transformer/layer_0/self_attention/query/kernel";

/// Whether `dir` is a TF Hub BERT encoder SavedModel: `saved_model.pb`, its variables (whose
/// object graph names Model Garden's `BertEncoder` variables) and `assets/vocab.txt`.
fn is_hub_bert(dir: &Path) -> bool {
    if !(dir.join("saved_model.pb").is_file()
        && dir.join(HUB_INDEX).is_file()
        && dir.join(HUB_VOCAB).is_file())
    {
        return false;
    }
    let Ok(bundle) = TensorBundle::open(&dir.join(HUB_INDEX)) else {
        return false;
    };
    matches!(crate::tf_objects::tracked_variables(&bundle),
        Ok(Some(tracked)) if tracked.values().any(|v| v.full_name == HUB_QUERY))
}

/// The release in `dir`, if it is one: no `config.json`, one checkpoint, and `bert_config.json`
/// (BERT) or a vocabulary and ELECTRA's `electra/...` variables.
fn family_of(dir: &Path) -> Option<Family> {
    if dir.join("config.json").exists() {
        return None;
    }
    if is_hub_bert(dir) {
        return Some(Family::HubBert);
    }
    if index_of(dir).is_err() {
        return None;
    }
    if dir.join(CONFIG).is_file() {
        return Some(Family::Bert);
    }
    if !dir.join(VOCAB).is_file() {
        return None;
    }
    let bundle = TensorBundle::open(&index_of(dir).ok()?).ok()?;
    bundle
        .tensors()
        .contains_key("electra/embeddings/word_embeddings")
        .then_some(Family::Electra)
}

/// What a conversion wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    pub tensors: usize,
    pub parameters: usize,
    /// Checkpoint tensors left out (pre-training heads, optimizer slots, the step counter).
    pub skipped: usize,
    pub lowercase: bool,
}

/// The release folder `path` names, when it is one: the folder itself, or the folder of its
/// `.index` file or checkpoint prefix.
pub fn release_dir(path: &Path) -> Option<PathBuf> {
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent()?.to_path_buf()
    };
    family_of(&dir).map(|_| dir)
}

/// The folder's single checkpoint index (`*.ckpt.index`, or any `*.index`).
fn index_of(dir: &Path) -> Result<PathBuf, ModelError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut indexes: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .collect();
    indexes.sort();
    match indexes.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ModelError::MissingFile {
            path: dir.to_path_buf(),
            what: "TensorFlow checkpoint (*.ckpt.index)",
        }),
        many => Err(ModelError::Config {
            path: dir.to_path_buf(),
            message: format!(
                "{} checkpoints ({}): keep one in the folder",
                many.len(),
                many.iter()
                    .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// `path` itself, or for a Google BERT or ELECTRA release, its converted folder in graft's cache (made on
/// first use).
pub fn resolve(path: &Path) -> Result<PathBuf, ModelError> {
    let Some(dir) = release_dir(path) else {
        return Ok(path.to_path_buf());
    };
    let read = |p: PathBuf| {
        std::fs::read(&p).map_err(|source| ModelError::Io {
            path: p.clone(),
            source,
        })
    };
    let files = match family_of(&dir) {
        Some(Family::HubBert) => [dir.join(HUB_INDEX), dir.join(HUB_VOCAB), dir.join(CONFIG)],
        _ => [index_of(&dir)?, dir.join(CONFIG), dir.join(VOCAB)],
    };
    let mut key = Vec::new();
    for file in files.into_iter().filter(|f| f.exists()) {
        key.push(read(file)?);
    }
    key.push(
        dir.file_name()
            .unwrap_or_default()
            .as_encoded_bytes()
            .to_vec(),
    );
    crate::converted::cached(key.iter().map(Vec::as_slice), |staging| {
        convert_into(&dir, staging)
    })
}

/// transformers' name for a checkpoint variable under `scope`, and whether its values are
/// transposed; `None` for what the encoder does not hold.
fn hf_name(name: &str, scope: &str) -> Option<(String, bool)> {
    let inner = name.strip_prefix(scope)?;
    let parts: Vec<&str> = inner.split('/').collect();
    let (last, path) = parts.split_last()?;
    if path.iter().any(|p| p.starts_with("adam") || p.is_empty()) || last.starts_with("adam") {
        return None;
    }
    let path: Vec<String> = path
        .iter()
        .map(|p| match p.strip_prefix("layer_") {
            Some(n) if n.parse::<usize>().is_ok() => format!("layer.{n}"),
            _ => p.to_string(),
        })
        .collect();
    let (leaf, transposed) = match *last {
        "kernel" => ("weight", true),
        "bias" | "beta" => ("bias", false),
        "gamma" => ("weight", false),
        table if table.ends_with("_embeddings") => {
            return Some((format!("{}.{table}.weight", path.join(".")), false));
        }
        _ => return None,
    };
    Some((format!("{}.{leaf}", path.join(".")), transposed))
}

/// ELECTRA's sizes, read off its converted tensors' shapes (the release has no config): the
/// embedding and hidden widths, layers, feed-forward width, positions and token types, with one
/// attention head per 64 hidden units as ELECTRA's pre-training code sets them.
fn electra_config(
    tensors: &[TensorBytes],
    index: &Path,
) -> Result<BTreeMap<String, Value>, ModelError> {
    let shape = |name: &str| {
        tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.shape.clone())
            .ok_or_else(|| ModelError::MissingTensors {
                path: index.to_path_buf(),
                names: vec![name.to_string()],
                available: tensors.len(),
            })
    };
    let words = shape("embeddings.word_embeddings.weight")?;
    let hidden = match shape("embeddings_project.weight") {
        Ok(projection) => projection[0],
        Err(_) => words[1],
    };
    let layers = layer_count(tensors);
    let intermediate = shape("encoder.layer.0.intermediate.dense.weight")?[0];
    Ok(BTreeMap::from([
        ("vocab_size".into(), json!(words[0])),
        ("embedding_size".into(), json!(words[1])),
        ("hidden_size".into(), json!(hidden)),
        ("num_hidden_layers".into(), json!(layers)),
        ("num_attention_heads".into(), json!((hidden / 64).max(1))),
        ("intermediate_size".into(), json!(intermediate)),
        (
            "max_position_embeddings".into(),
            json!(shape("embeddings.position_embeddings.weight")?[0]),
        ),
        (
            "type_vocab_size".into(),
            json!(shape("embeddings.token_type_embeddings.weight")?[0]),
        ),
        ("hidden_act".into(), json!("gelu")),
        ("hidden_dropout_prob".into(), json!(0.1)),
        ("attention_probs_dropout_prob".into(), json!(0.1)),
    ]))
}

/// The encoder layers among converted tensors (`encoder.layer.N....`).
fn layer_count(tensors: &[TensorBytes]) -> usize {
    tensors
        .iter()
        .filter_map(|t| t.name.strip_prefix("encoder.layer."))
        .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |last| last + 1)
}

/// Whether the release lower-cases its text: its folder's name (`uncased_...`, `cased_...`),
/// else whether its vocabulary has no capital letters outside `[SPECIAL]` tokens.
fn lowercase(dir: &Path, vocab: &str) -> bool {
    let name = dir
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_lowercase();
    if name.contains("uncased") {
        return true;
    }
    if name.contains("cased") {
        return false;
    }
    !vocab
        .lines()
        .filter(|t| !(t.starts_with('[') && t.ends_with(']')))
        .any(|t| t.chars().any(char::is_uppercase))
}

/// Writes the transformers folder of the release in `dir` to `out`: built beside it and renamed
/// into place, so an interrupted conversion leaves nothing half-written. An `out` that holds
/// anything is refused.
pub fn convert(dir: &Path, out: &Path) -> Result<Converted, ModelError> {
    crate::converted::into_new_folder(out, |staging| convert_into(dir, staging))
}

/// [`convert`]'s work, into the existing folder `out`.
fn convert_into(dir: &Path, out: &Path) -> Result<Converted, ModelError> {
    let family = family_of(dir).ok_or_else(|| ModelError::Config {
        path: dir.to_path_buf(),
        message: "not a Google BERT release (bert_config.json and a checkpoint) nor an ELECTRA \
                  one (a checkpoint of electra/... variables and vocab.txt)"
            .into(),
    })?;
    let vocab_path = match family {
        Family::HubBert => dir.join(HUB_VOCAB),
        _ => dir.join(VOCAB),
    };
    let vocab = std::fs::read_to_string(&vocab_path).map_err(crate::tf_bundle::opening(
        &vocab_path,
        "WordPiece vocabulary",
    ))?;
    if family == Family::HubBert {
        let bundle = TensorBundle::open(&dir.join(HUB_INDEX))?;
        let hub = hub_tensors(&bundle)?;
        return write_folder(out, &bundle.index, family, hub, &vocab);
    }
    let bundle = TensorBundle::open(&index_of(dir)?)?;
    let mut tensors = Vec::new();
    let (mut parameters, mut skipped) = (0, 0);
    for name in bundle.tensors().keys() {
        let Some((hf, transposed)) = hf_name(name, family.scope()) else {
            skipped += 1;
            continue;
        };
        let (mut shape, mut values) = bundle.f32(name)?;
        if transposed {
            let [rows, cols] = shape[..] else {
                return Err(ModelError::CorruptWeights {
                    path: bundle.index.clone(),
                    message: format!("tensor `{name}`: a kernel of shape {shape:?}, not 2-D"),
                });
            };
            values = (0..cols)
                .flat_map(|c| (0..rows).map(move |r| (r, c)))
                .map(|(r, c)| values[r * cols + c])
                .collect();
            shape = vec![cols, rows];
        }
        parameters += values.len();
        tensors.push(TensorBytes {
            name: hf,
            shape,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            dtype: Dtype::F32,
        });
    }
    if tensors.is_empty() {
        return Err(ModelError::CorruptWeights {
            path: bundle.index.clone(),
            message: format!("no `{}...` variables", family.scope()),
        });
    }
    let google: BTreeMap<String, Value> = match family {
        Family::Bert => crate::read_config(&dir.join(CONFIG), |_| Ok(()))?,
        _ => electra_config(&tensors, &bundle.index)?,
    };
    let release = Release {
        tensors,
        config: google,
        parameters,
        skipped,
        lowercase: lowercase(dir, &vocab),
    };
    write_folder(out, &bundle.index, family, release, &vocab)
}

/// How a TF Hub variable's values become transformers' tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HubLayout {
    Plain,
    /// A dense kernel `[in, out]`, transposed.
    Transposed,
    /// An attention projection's kernel `[hidden, heads, head]`: `[heads·head, hidden]`.
    HeadsOut,
    /// An attention projection's bias `[heads, head]`: flattened.
    HeadsBias,
    /// The attention output's kernel `[heads, head, hidden]`: `[hidden, heads·head]`.
    HeadsIn,
}

/// transformers' `BertModel` name of a TF Hub BERT encoder variable (by its object-graph name),
/// and how its values are laid out; `None` for a variable `BertModel` does not have.
fn hub_name(full_name: &str) -> Option<(String, HubLayout)> {
    use HubLayout::*;
    let leaf = |name: &str| match name {
        "gamma" | "kernel" => "weight",
        _ => "bias",
    };
    let parts: Vec<&str> = full_name.split('/').collect();
    let mapped = match parts.as_slice() {
        ["word_embeddings", "embeddings"] => ("embeddings.word_embeddings.weight".into(), Plain),
        ["position_embedding", "embeddings"] => {
            ("embeddings.position_embeddings.weight".into(), Plain)
        }
        ["type_embeddings", "embeddings"] => {
            ("embeddings.token_type_embeddings.weight".into(), Plain)
        }
        ["embeddings", "layer_norm", p @ ("gamma" | "beta")] => {
            (format!("embeddings.LayerNorm.{}", leaf(p)), Plain)
        }
        ["pooler_transform", p @ ("kernel" | "bias")] => (
            format!("pooler.dense.{}", leaf(p)),
            if *p == "kernel" { Transposed } else { Plain },
        ),
        ["transformer", layer, rest @ ..] => {
            let n: usize = layer.strip_prefix("layer_")?.parse().ok()?;
            let at = format!("encoder.layer.{n}");
            match rest {
                [
                    "self_attention",
                    qkv @ ("query" | "key" | "value"),
                    p @ ("kernel" | "bias"),
                ] => (
                    format!("{at}.attention.self.{qkv}.{}", leaf(p)),
                    if *p == "kernel" { HeadsOut } else { HeadsBias },
                ),
                [
                    "self_attention",
                    "attention_output",
                    p @ ("kernel" | "bias"),
                ] => (
                    format!("{at}.attention.output.dense.{}", leaf(p)),
                    if *p == "kernel" { HeadsIn } else { Plain },
                ),
                ["self_attention_layer_norm", p @ ("gamma" | "beta")] => (
                    format!("{at}.attention.output.LayerNorm.{}", leaf(p)),
                    Plain,
                ),
                [dense @ ("intermediate" | "output"), p @ ("kernel" | "bias")] => (
                    format!("{at}.{dense}.dense.{}", leaf(p)),
                    if *p == "kernel" { Transposed } else { Plain },
                ),
                ["output_layer_norm", p @ ("gamma" | "beta")] => {
                    (format!("{at}.output.LayerNorm.{}", leaf(p)), Plain)
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(mapped)
}

/// A TF Hub BERT encoder's variables (Model Garden's `BertEncoder`, as TF Hub's
/// `bert_en_uncased_L-12_H-768_A-12/4` and the Small BERTs hold it), named through the
/// SavedModel's object graph, as transformers' `BertModel`; its activation is Model Garden's
/// GELU, the tanh approximation (`gelu_new`), and whether it lower-cases is the SavedModel's own
/// `do_lower_case` variable.
fn hub_tensors(bundle: &TensorBundle) -> Result<Release, ModelError> {
    let corrupt = |message: String| ModelError::CorruptWeights {
        path: bundle.index.clone(),
        message,
    };
    let tracked = crate::tf_objects::tracked_variables(bundle)?
        .ok_or_else(|| corrupt("a SavedModel without an object graph".into()))?;
    let mut tensors = Vec::new();
    let (mut parameters, mut skipped) = (0, 0);
    let mut lowercase = None;
    let mut shapes = BTreeMap::new();
    for (key, variable) in &tracked {
        if key.starts_with("do_lower_case/") {
            lowercase = Some(bundle.bytes(key)?.first() == Some(&1));
            continue;
        }
        if variable.optimizer {
            skipped += 1;
            continue;
        }
        let Some((name, layout)) = hub_name(&variable.full_name) else {
            return Err(corrupt(format!(
                "variable `{}` ({key}) is not one of a BERT encoder's (graft reads TF Hub's \
                 BERT encoders, Model Garden's `BertEncoder`)",
                variable.full_name
            )));
        };
        let (shape, values) = bundle.f32(key)?;
        let bad = |what: &str| {
            corrupt(format!(
                "variable `{}`: shape {shape:?}, not {what}",
                variable.full_name
            ))
        };
        let transpose = |rows: usize, cols: usize, values: &[f32]| -> Vec<f32> {
            (0..cols)
                .flat_map(|c| (0..rows).map(move |r| values[r * cols + c]))
                .collect()
        };
        let (shape, values) = match layout {
            HubLayout::Plain => (shape.clone(), values),
            HubLayout::Transposed => {
                let [rows, cols] = shape[..] else {
                    return Err(bad("[in, out]"));
                };
                (vec![cols, rows], transpose(rows, cols, &values))
            }
            HubLayout::HeadsOut => {
                let [hidden, heads, head] = shape[..] else {
                    return Err(bad("[hidden, heads, head]"));
                };
                let width = heads * head;
                (vec![width, hidden], transpose(hidden, width, &values))
            }
            HubLayout::HeadsBias => {
                let [heads, head] = shape[..] else {
                    return Err(bad("[heads, head]"));
                };
                (vec![heads * head], values)
            }
            HubLayout::HeadsIn => {
                let [heads, head, hidden] = shape[..] else {
                    return Err(bad("[heads, head, hidden]"));
                };
                let width = heads * head;
                (vec![hidden, width], transpose(width, hidden, &values))
            }
        };
        if name.ends_with("attention.self.query.weight") && name.starts_with("encoder.layer.0.") {
            shapes.insert("heads", bundle.tensors()[key].shape[1]);
        }
        parameters += values.len();
        let size = match name.as_str() {
            "embeddings.word_embeddings.weight" => Some("words"),
            "embeddings.position_embeddings.weight" => Some("positions"),
            "embeddings.token_type_embeddings.weight" => Some("types"),
            "encoder.layer.0.intermediate.dense.weight" => Some("intermediate"),
            _ => None,
        };
        if let Some(size) = size {
            shapes.insert(size, shape[0]);
        }
        if name == "embeddings.word_embeddings.weight" {
            shapes.insert("hidden", shape[1]);
        }
        tensors.push(TensorBytes {
            name,
            shape,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            dtype: Dtype::F32,
        });
    }
    let size = |key: &str| {
        shapes
            .get(key)
            .copied()
            .ok_or_else(|| corrupt(format!("no BERT encoder variable gives the {key} size")))
    };
    let layers = layer_count(&tensors);
    let config = BTreeMap::from([
        ("vocab_size".into(), json!(size("words")?)),
        ("hidden_size".into(), json!(size("hidden")?)),
        ("num_hidden_layers".into(), json!(layers)),
        ("num_attention_heads".into(), json!(size("heads")?)),
        ("intermediate_size".into(), json!(size("intermediate")?)),
        ("max_position_embeddings".into(), json!(size("positions")?)),
        ("type_vocab_size".into(), json!(size("types")?)),
        ("hidden_act".into(), json!("gelu_new")),
        ("hidden_dropout_prob".into(), json!(0.1)),
        ("attention_probs_dropout_prob".into(), json!(0.1)),
    ]);
    Ok(Release {
        tensors,
        config,
        parameters,
        skipped,
        lowercase: lowercase.ok_or_else(|| corrupt("no `do_lower_case` variable".into()))?,
    })
}

/// A release's tensors in transformers' names, its config keys, and whether it lower-cases.
struct Release {
    tensors: Vec<TensorBytes>,
    config: BTreeMap<String, Value>,
    parameters: usize,
    skipped: usize,
    lowercase: bool,
}

/// Writes the transformers folder: weights, `config.json`, the vocabulary, `tokenizer.json` and
/// `tokenizer_config.json`.
fn write_folder(
    out: &Path,
    index: &Path,
    family: Family,
    release: Release,
    vocab: &str,
) -> Result<Converted, ModelError> {
    let Release {
        tensors,
        config: google,
        parameters,
        skipped,
        lowercase: lower,
    } = release;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    let weights = serialize(&tensors, None).map_err(|message| ModelError::CorruptWeights {
        path: index.to_path_buf(),
        message,
    })?;
    let weights_path = out.join("model.safetensors");
    crate::write_atomic(&weights_path, &weights).map_err(io(&weights_path))?;
    let (architecture, model_type) = match family {
        Family::Bert | Family::HubBert => ("BertModel", "bert"),
        Family::Electra => ("ElectraModel", "electra"),
    };
    let mut config = serde_json::Map::new();
    config.insert("architectures".into(), json!([architecture]));
    config.insert("model_type".into(), json!(model_type));
    config.insert("layer_norm_eps".into(), json!(1e-12));
    config.insert("pad_token_id".into(), json!(0));
    for (key, value) in &google {
        config.insert(key.clone(), value.clone());
    }
    let write_json = |name: &str, value: &Value| {
        let path = out.join(name);
        let text = serde_json::to_string_pretty(value).expect("json");
        crate::write_atomic(&path, text.as_bytes()).map_err(io(&path))
    };
    write_json("config.json", &Value::Object(config))?;
    let vocab_out = out.join(VOCAB);
    crate::write_atomic(&vocab_out, vocab.as_bytes()).map_err(io(&vocab_out))?;
    write_tokenizer(&vocab_out, lower, &out.join("tokenizer.json"))?;
    let max_length = google
        .get("max_position_embeddings")
        .and_then(Value::as_u64)
        .unwrap_or(512);
    write_json(
        "tokenizer_config.json",
        &json!({
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": lower,
            "model_max_length": max_length,
            "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
            "cls_token": "[CLS]", "mask_token": "[MASK]"
        }),
    )?;
    Ok(Converted {
        tensors: tensors.len(),
        parameters,
        skipped,
        lowercase: lower,
    })
}

/// The `tokenizer.json` of `BertTokenizerFast(vocab, do_lower_case=lowercase)`: BERT's
/// normalizer (accents stripped with lower-casing), pre-tokenizer, WordPiece with `[UNK]` and
/// `##` pieces, and `[CLS] a [SEP] b [SEP]` with token types 0 then 1.
fn write_tokenizer(vocab: &Path, lowercase: bool, out: &Path) -> Result<(), ModelError> {
    use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::bert::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::processors::template::TemplateProcessing;

    let invalid = |message: String| ModelError::Config {
        path: vocab.to_path_buf(),
        message,
    };
    let model = WordPiece::from_file(&vocab.to_string_lossy())
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    let id = |token: &str| {
        tokenizers::Model::token_to_id(&model, token)
            .ok_or_else(|| invalid(format!("the vocabulary has no {token}")))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    let processor = TemplateProcessing::builder()
        .try_single("[CLS]:0 $A:0 [SEP]:0")
        .and_then(|b| b.try_pair("[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1"))
        .map_err(invalid)?
        .special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(processor))
        .with_decoder(Some(WordPieceDecoder::default()));
    let text = tokenizer
        .to_string(true)
        .map_err(|e| invalid(e.to_string()))?;
    crate::write_atomic(out, text.as_bytes()).map_err(|source| ModelError::Io {
        path: out.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_names_map_to_transformers_names() {
        let cases = [
            (
                "bert/embeddings/word_embeddings",
                Some(("embeddings.word_embeddings.weight", false)),
            ),
            (
                "bert/embeddings/LayerNorm/gamma",
                Some(("embeddings.LayerNorm.weight", false)),
            ),
            (
                "bert/encoder/layer_11/attention/self/query/kernel",
                Some(("encoder.layer.11.attention.self.query.weight", true)),
            ),
            (
                "bert/encoder/layer_0/output/LayerNorm/beta",
                Some(("encoder.layer.0.output.LayerNorm.bias", false)),
            ),
            ("bert/pooler/dense/bias", Some(("pooler.dense.bias", false))),
            ("bert/encoder/layer_0/output/dense/kernel/adam_m", None),
            ("cls/predictions/output_bias", None),
            ("global_step", None),
        ];
        for (google, expected) in cases {
            let got = hf_name(google, "bert/");
            assert_eq!(
                got.as_ref().map(|(n, t)| (n.as_str(), *t)),
                expected,
                "{google}"
            );
        }
    }

    #[test]
    fn casing_follows_the_folder_name_then_the_vocabulary() {
        let lower = "[PAD]\n[UNK]\nthe\n##s\n";
        let upper = "[PAD]\n[UNK]\nThe\n##s\n";
        assert!(lowercase(Path::new("uncased_L-12_H-768_A-12"), upper));
        assert!(!lowercase(Path::new("cased_L-12_H-768_A-12"), lower));
        assert!(!lowercase(Path::new("multi_cased_L-12_H-768_A-12"), lower));
        assert!(lowercase(Path::new("my-bert"), lower));
        assert!(!lowercase(Path::new("my-bert"), upper));
    }
}
