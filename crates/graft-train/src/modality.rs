//! What differs between text and images, behind one interface, so that the pipeline has one path:
//! reading examples (a training split or an input file), how a backbone folder's features are
//! made (pooling, max length, image transform), encoding examples once (token ids or decoded
//! images), making batches, and the content that keys the feature cache.

use std::path::{Path, PathBuf};

use burn::backend::DispatchDevice;
use burn::tensor::{Device, Tensor, TensorData};
use graft_data::image::{Augment, decode_rgb, read_image_folder, read_rgb, resolve_paths};
use graft_data::tagged::words_and_tags;
use graft_data::tokenize::Tokens;
use graft_data::{
    Columns, DataFormat, TextExample, TextTokenizer, TokenBatch, read_examples, read_texts,
};
use graft_model::{
    ImageTransform, Inputs, Modality, ModelFolder, Pooling, PoolingOptions, Preprocessing,
    TextTransform,
};
use image::RgbImage;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bad_rows::{Screen, input_problem};
use crate::config::{DataSection, Format};
use crate::error::{TrainError, TrainError as E};

/// A file of inputs for `eval`, `predict` and `embed`.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    /// Text: the text column of a CSV/JSONL/parquet file (plain text files have one text per
    /// line). Images: the image column (paths, or a parquet file's encoded images).
    pub column: Option<String>,
    /// Pairs of texts: the column of the second text.
    pub pair_column: Option<String>,
    /// Embedding triplets: the column of the third text (the negative).
    pub negative_column: Option<String>,
}

/// What the user chose about features; `None` takes the folder's defaults.
#[derive(Debug, Clone, Default)]
pub struct FeatureChoices {
    pub pooling: Option<Pooling>,
    pub normalize: Option<bool>,
    pub max_length: Option<usize>,
    pub pooler: Option<bool>,
    pub image_size: Option<usize>,
    /// Images: the share of the resized image the center crop keeps (timm's `crop_pct`).
    pub crop_pct: Option<f64>,
}

/// How a backbone's inputs are prepared, as resolved for a run and stored in its manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "modality", rename_all = "lowercase")]
pub enum Preparation {
    Text {
        pooling: Pooling,
        use_pooler: bool,
        normalize: bool,
        max_length: usize,
    },
    Image(ImageTransform),
}

impl Preparation {
    /// The pooling and normalization of the features. Images: the architecture's own pooling.
    pub fn pooling(&self) -> PoolingOptions {
        match self {
            Self::Text {
                pooling,
                use_pooler,
                normalize,
                ..
            } => PoolingOptions {
                pooling: *pooling,
                use_pooler: *use_pooler,
                normalize: *normalize,
            },
            Self::Image(_) => PoolingOptions::default(),
        }
    }

    pub fn modality(&self) -> Modality {
        match self {
            Self::Text { .. } => Modality::Text,
            Self::Image(_) => Modality::Image,
        }
    }

    /// Resolves the user's choices against a folder's preprocessing: for text the config's
    /// pooling, else the folder's sentence-transformers defaults, else mean pooling without
    /// normalization at the model's max positions; for images the folder's transform at the
    /// chosen size. `origin` names the config in errors.
    pub fn resolve(
        folder: &ModelFolder,
        choices: &FeatureChoices,
        origin: &Path,
    ) -> Result<Self, TrainError> {
        let invalid = |message: String| E::Config {
            path: origin.to_path_buf(),
            message,
        };
        match folder.preprocessing()? {
            Preprocessing::Text(text) => {
                if let Some(key) = [
                    ("image_size", choices.image_size.is_some()),
                    ("crop_pct", choices.crop_pct.is_some()),
                ]
                .iter()
                .find_map(|(key, given)| given.then_some(key))
                {
                    return Err(invalid(format!(
                        "{key} is for image models; {} reads text",
                        folder.dir.display()
                    )));
                }
                Self::resolve_text(folder, &text, choices).map_err(invalid)
            }
            Preprocessing::Image(transform) => {
                let text_only = [
                    ("pooling", choices.pooling.is_some()),
                    ("max_length", choices.max_length.is_some()),
                    ("pooler", choices.pooler == Some(true)),
                ];
                if let Some((key, _)) = text_only.iter().find(|(_, given)| *given) {
                    return Err(invalid(format!(
                        "{key} is for text models; {} reads images",
                        folder.dir.display()
                    )));
                }
                let image_size = choices.image_size.unwrap_or(transform.image_size);
                if image_size < graft_model::vision::MIN_IMAGE_SIZE {
                    return Err(invalid(format!(
                        "image_size {image_size} is too small (at least {})",
                        graft_model::vision::MIN_IMAGE_SIZE
                    )));
                }
                if let Some(c) = choices.crop_pct
                    && !(c > 0.0 && c <= 1.0)
                {
                    return Err(invalid(format!("crop_pct {c} is not in (0, 1]")));
                }
                // The folder's crop share at the size asked for, as timm and transformers size it.
                Ok(Self::Image(transform.at_size(image_size, choices.crop_pct)))
            }
        }
    }

    fn resolve_text(
        folder: &ModelFolder,
        text: &TextTransform,
        choices: &FeatureChoices,
    ) -> Result<Self, String> {
        let st = folder.sentence_transformers.clone().unwrap_or_default();
        let pooling = choices.pooling.or(st.pooling).unwrap_or(Pooling::Mean);
        let use_pooler = pooling == Pooling::Cls && choices.pooler.unwrap_or(text.has_pooler);
        if use_pooler && !text.has_pooler {
            return Err(format!(
                "pooler = true, but {} has no pooler weights (pooler.dense.weight)",
                folder.weights_path().display()
            ));
        }
        let max_length = choices
            .max_length
            .or(st.max_seq_length)
            .unwrap_or(text.max_positions);
        if max_length > text.max_positions {
            return Err(format!(
                "max_length {max_length} exceeds the model's max_position_embeddings {}",
                text.max_positions
            ));
        }
        Ok(Self::Text {
            pooling,
            use_pooler,
            // sentence-transformers' Normalize belongs to its pooling recipe, not to the pooler.
            normalize: choices.normalize.unwrap_or(st.normalize && !use_pooler),
            max_length,
        })
    }

    /// The encoder for a loaded backbone of `folder`.
    pub fn encoder(&self, folder: &ModelFolder) -> Result<Encoder, TrainError> {
        Ok(match self {
            Self::Text { max_length, .. } => {
                let Preprocessing::Text(text) = folder.preprocessing()? else {
                    return Err(E::Config {
                        path: folder.config_path(),
                        message: "a text run on an image model".into(),
                    });
                };
                Encoder::Text(Box::new(TextTokenizer::from_file(
                    &text.tokenizer,
                    *max_length,
                    text.vocab_size,
                )?))
            }
            Self::Image(transform) => Encoder::Image(transform.clone()),
        })
    }

    /// The transform of an image preparation.
    pub fn image_transform(&self) -> Option<&ImageTransform> {
        match self {
            Self::Image(transform) => Some(transform),
            Self::Text { .. } => None,
        }
    }
}

/// Turns examples into model inputs: a tokenizer or an image transform.
pub enum Encoder {
    Text(Box<TextTokenizer>),
    /// Token classification: sentences given as words (a JSON list) are tokenized keeping each
    /// token's word, with the tokenizer set for words ([`TextTokenizer::for_words`], the first);
    /// raw text with the tokenizer as the folder has it (the second), as transformers' pipeline
    /// reads it.
    Words(Box<TextTokenizer>, Box<TextTokenizer>),
    Image(ImageTransform),
}

impl Encoder {
    /// The encoder of a token-classification run: a text tokenizer set for words.
    pub fn for_words(self) -> Self {
        match self {
            Self::Text(tokenizer) => Self::Words(Box::new(tokenizer.for_words()), tokenizer),
            other => other,
        }
    }

    /// The tokenizer of raw text.
    pub fn tokenizer(&self) -> Option<&TextTokenizer> {
        match self {
            Self::Text(tokenizer) | Self::Words(_, tokenizer) => Some(tokenizer),
            Self::Image(_) => None,
        }
    }

    /// Tokenizes the texts, or decodes the images, of `examples` once for the whole run.
    pub fn encode(&self, examples: &[TextExample]) -> Result<Encoded, TrainError> {
        Ok(match self {
            Self::Words(tokenizer, _) => {
                let mut sentences = Vec::with_capacity(examples.len());
                for example in examples {
                    let (words, _) = words_and_tags(example, Path::new("the input"))?;
                    sentences.push(words);
                }
                let (tokens, word_ids) = tokenizer
                    .tokenize_words(&sentences)?
                    .into_iter()
                    .map(|w| (w.tokens, w.word_ids))
                    .unzip();
                Encoded::Text {
                    tokens,
                    max_length: tokenizer.max_length(),
                    word_ids: Some(word_ids),
                }
            }
            Self::Text(tokenizer) => {
                let tokens = match pairs_of(examples)? {
                    Some(pairs) => tokenizer.tokenize_pairs(&pairs)?,
                    None => {
                        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
                        tokenizer.tokenize(&texts)?
                    }
                };
                Encoded::Text {
                    tokens,
                    max_length: tokenizer.max_length(),
                    word_ids: None,
                }
            }
            Self::Image(preprocess) => {
                let mut images = Vec::with_capacity(examples.len());
                let mut digests = Vec::with_capacity(examples.len());
                for example in examples {
                    let (image, digest) = match &example.bytes {
                        Some(bytes) => (
                            decode_rgb(bytes, Path::new(&example.text))?,
                            Sha256::digest(bytes),
                        ),
                        None => {
                            let (image, bytes) = read_rgb(Path::new(&example.text))?;
                            (image, Sha256::digest(&bytes))
                        }
                    };
                    images.push(image);
                    digests.push(digest.into());
                }
                Encoded::Image {
                    images,
                    digests,
                    preprocess: preprocess.clone(),
                }
            }
        })
    }

    /// What of the encoding changes features, for the feature cache's key.
    pub fn key(&self) -> String {
        match self {
            Self::Text(tokenizer) => format!("max_length={}", tokenizer.max_length()),
            Self::Words(tokenizer, _) => format!("words,max_length={}", tokenizer.max_length()),
            Self::Image(preprocess) => format!("{preprocess:?}"),
        }
    }
}

/// Training-time augmentation of one epoch.
#[derive(Clone, Copy)]
pub struct EpochAugment<'a> {
    pub augment: &'a Augment,
    pub seed: u64,
    pub epoch: usize,
}

/// Examples encoded once and kept for the run.
pub enum Encoded {
    Text {
        tokens: Vec<Tokens>,
        /// The tokenizer's truncation length: no batch is padded past it.
        max_length: usize,
        /// Sentences given as words: each token's word (`None` for special tokens).
        word_ids: Option<Vec<Vec<Option<u32>>>>,
    },
    Image {
        images: Vec<RgbImage>,
        /// SHA-256 of each image file.
        digests: Vec<[u8; 32]>,
        preprocess: ImageTransform,
    },
}

impl Encoded {
    pub fn len(&self) -> usize {
        match self {
            Self::Text { tokens, .. } => tokens.len(),
            Self::Image { images, .. } => images.len(),
        }
    }

    /// The model inputs of the examples at `indices`. With `augment`, image i of epoch e is
    /// transformed with a generator seeded from (seed, e, i), so a resumed run repeats it exactly.
    pub fn batch(
        &self,
        indices: &[usize],
        augment: Option<EpochAugment>,
        device: &Device,
    ) -> Inputs {
        match self {
            Self::Text {
                tokens, max_length, ..
            } => {
                let rows: Vec<&Tokens> = indices.iter().map(|&i| &tokens[i]).collect();
                let (input_ids, token_type_ids, attention_mask) =
                    TokenBatch::pad_to_multiple(&rows, sequence_multiple(device), *max_length)
                        .to_tensors(device);
                Inputs::Text {
                    input_ids,
                    token_type_ids,
                    attention_mask,
                }
            }
            Self::Image {
                images, preprocess, ..
            } => {
                let size = preprocess.image_size;
                let mut values = Vec::with_capacity(indices.len() * 3 * size * size);
                for &i in indices {
                    values.extend(match augment {
                        Some(EpochAugment {
                            augment,
                            seed,
                            epoch,
                        }) => {
                            let mixed = seed
                                .wrapping_mul(0x9e3779b97f4a7c15)
                                .wrapping_add((epoch as u64) << 32)
                                .wrapping_add(i as u64);
                            let mut rng = StdRng::seed_from_u64(mixed);
                            preprocess.apply_augmented(&images[i], augment, &mut rng)
                        }
                        None => preprocess.apply(&images[i]),
                    });
                }
                Inputs::Image(Tensor::from_data(
                    TensorData::new(values, [indices.len(), 3, size, size]),
                    device,
                ))
            }
        }
    }

    /// Sentences given as words: each token's word (`None` for special tokens).
    pub fn word_ids(&self) -> Option<&[Vec<Option<u32>>]> {
        match self {
            Self::Text { word_ids, .. } => word_ids.as_deref(),
            Self::Image { .. } => None,
        }
    }

    /// Each example's length in tokens, for `group_by_length` (text only).
    pub fn lengths(&self) -> Option<Vec<usize>> {
        match self {
            Self::Text { tokens, .. } => Some(tokens.iter().map(|t| t.ids.len()).collect()),
            Self::Image { .. } => None,
        }
    }

    /// `indices` in batches of `batch_size` for inference: texts of similar length together (so
    /// little padding is computed), images in order.
    pub fn buckets(&self, indices: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
        let mut order = indices.to_vec();
        if let Self::Text { tokens, .. } = self {
            order.sort_by_key(|&i| tokens[i].ids.len());
        }
        order.chunks(batch_size).map(<[usize]>::to_vec).collect()
    }

    /// Adds what example `i`'s features depend on to a cache key: its token ids, or its image
    /// file's bytes (through their digest).
    pub fn hash_example(&self, i: usize, hasher: &mut Sha256) {
        match self {
            Self::Text { tokens, .. } => {
                let t = &tokens[i];
                hasher.update((t.ids.len() as u64).to_le_bytes());
                for (id, type_id) in t.ids.iter().zip(&t.type_ids) {
                    hasher.update(id.to_le_bytes());
                    hasher.update(type_id.to_le_bytes());
                }
            }
            Self::Image { digests, .. } => hasher.update(digests[i]),
        }
    }
}

/// The examples as pairs of texts when they are pairs; `None` when none is. Pairs mixed with
/// single texts are an error naming the first line without a pair.
fn pairs_of(examples: &[TextExample]) -> Result<Option<Vec<(&str, &str)>>, TrainError> {
    if examples.iter().all(|e| e.pair.is_none()) {
        return Ok(None);
    }
    examples
        .iter()
        .map(|e| match &e.pair {
            Some(pair) => Ok((e.text.as_str(), pair.as_str())),
            None => Err(E::Unsupported(format!(
                "line {}: a single text among pairs of texts; give every input its second text",
                e.line
            ))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Embedding training: every text of each example (its text, second text and negative) as an
/// example of its own, example-major, so that example `i` of `m` texts is rows `i·m..(i+1)·m`.
pub fn each_text(examples: &[TextExample]) -> Vec<TextExample> {
    examples
        .iter()
        .flat_map(|e| {
            [Some(&e.text), e.pair.as_ref(), e.negative.as_ref()]
                .into_iter()
                .flatten()
                .map(|text| TextExample {
                    line: e.line,
                    ..TextExample::unlabelled(text.clone())
                })
        })
        .collect()
}

/// The multiple a text batch's length is rounded up to on `device`. cubecl backends (wgpu)
/// compile and autotune kernels for every new input shape, about 0.4 s each on an H200, so
/// length-sorted batches of every length up to 256 would spend a minute there (BENCHMARKS.md);
/// multiples of 32 leave at most `max_length / 32` shapes. The CPU backends run any shape at no
/// extra cost and pad only to the longest text.
pub fn sequence_multiple(device: &Device) -> usize {
    match device.as_dispatch().clone().inner() {
        DispatchDevice::Flex(_) | DispatchDevice::NdArray(_) => 1,
        _ => 32,
    }
}

/// A training, validation or test split of a config: texts from CSV/JSONL/parquet, or images from
/// an image folder, a CSV/JSONL/parquet of image paths (relative to the file), or a parquet file
/// holding the images. `label_column` is read as each example's label when given.
pub fn read_split(
    data: &DataSection,
    label_column: Option<&str>,
    path: &Path,
) -> Result<Vec<TextExample>, TrainError> {
    let label = label_column;
    Ok(match (data.format, &data.image_column) {
        (Format::ImageFolder, _) => read_image_folder(path)?,
        (format, Some(column)) => {
            let mut examples = read_texts(path, table_format(format), column, label)?;
            resolve_paths(&mut examples, path);
            examples
        }
        (format, None) => read_examples(
            path,
            table_format(format),
            Columns {
                text: &data.text_column,
                pair: data.text_pair.as_deref(),
                negative: data.negative_column.as_deref(),
                label,
            },
        )?,
    })
}

fn table_format(format: Format) -> DataFormat {
    match format {
        Format::Jsonl => DataFormat::Jsonl,
        Format::Parquet => DataFormat::Parquet,
        Format::Conll => DataFormat::Conll,
        _ => DataFormat::Csv,
    }
}

/// The examples of an input file for a model of `modality`. Text: a CSV/JSONL/parquet file with
/// `input.column`, or any other file with one text per line. Images: an image folder
/// (`root/<class>/<image>`, labels from the folders), a plain folder of images, one image file,
/// or a CSV/JSONL/parquet whose column holds image paths (or, parquet, the images). With `label_column`, every example must have
/// a label.
pub fn read_input(
    modality: Modality,
    input: &Input,
    label_column: Option<&str>,
) -> Result<Vec<TextExample>, TrainError> {
    let path = &input.path;
    let examples = match modality {
        Modality::Text => {
            let format = DataFormat::from_extension(path);
            if format == DataFormat::Lines && label_column.is_some() {
                return Err(E::Config {
                    path: path.clone(),
                    message: "evaluation needs labels: give a .csv, .jsonl or .parquet file".into(),
                });
            }
            let column = match (format, &input.column) {
                (DataFormat::Lines | DataFormat::Conll, _) => "",
                (_, Some(column)) => column.as_str(),
                (_, None) => return Err(E::NeedsColumn { path: path.clone() }),
            };
            read_examples(
                path,
                format,
                Columns {
                    text: column,
                    pair: input.pair_column.as_deref(),
                    negative: input.negative_column.as_deref(),
                    label: label_column,
                },
            )?
        }
        Modality::Image if input.pair_column.is_some() => {
            return Err(E::Unsupported(format!(
                "{}: pairs are of texts; an image model reads one image per input",
                path.display()
            )));
        }
        Modality::Image => read_images(path, input.column.as_deref(), label_column)?,
    };
    // Labelled inputs are screened with their labels, by the task (`evaluate`).
    let examples = match label_column {
        None => Screen::inputs().apply(path, examples, input_problem)?,
        Some(_) => examples,
    };
    if label_column.is_some() && examples.iter().any(|e| e.label.is_none()) {
        return Err(E::Config {
            path: path.clone(),
            message:
                "evaluation needs labels: an image folder or a CSV/JSONL/parquet file with labels"
                    .into(),
        });
    }
    Ok(examples)
}

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn image_example(path: &Path) -> TextExample {
    TextExample::unlabelled(path.to_string_lossy())
}

fn read_images(
    path: &Path,
    image_column: Option<&str>,
    label_column: Option<&str>,
) -> Result<Vec<TextExample>, TrainError> {
    if path.is_dir() {
        let entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| E::Io {
                path: path.to_path_buf(),
                source,
            })?
            .flatten()
            .map(|e| e.path())
            .collect();
        if entries.iter().any(|p| p.is_dir()) {
            return Ok(read_image_folder(path)?);
        }
        // A plain folder of images, in name order, without labels.
        let mut images: Vec<PathBuf> = entries.into_iter().filter(|p| is_image_file(p)).collect();
        if images.is_empty() {
            return Err(E::Config {
                path: path.to_path_buf(),
                message: "no images (.png, .jpg) in this folder".into(),
            });
        }
        images.sort();
        return Ok(images.iter().map(|p| image_example(p)).collect());
    }
    if is_image_file(path) {
        return Ok(vec![image_example(path)]);
    }
    let format = DataFormat::from_extension(path);
    let column = image_column.unwrap_or("image");
    let mut examples = read_texts(path, format, column, label_column)?;
    resolve_paths(&mut examples, path);
    Ok(examples)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's image preparation as graft.json stored it before the transform was one type (no
    /// crop share, filter or crop offset) still reads, with the defaults of then.
    #[test]
    fn older_image_preparations_still_read() {
        let stored = serde_json::json!({"modality": "image", "image_size": 96,
            "resize_shorter": 110, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]});
        let preparation: Preparation = serde_json::from_value(stored).unwrap();
        let t = preparation.image_transform().unwrap();
        assert_eq!((t.image_size, t.resize_shorter), (96, Some(110)));
        assert!(!t.squash_before_crop);
        assert_eq!(t.interpolation, graft_data::image::Interpolation::Bicubic);
        assert_eq!(t.crop_offset, graft_data::image::CropOffset::Floor);
        assert_eq!(t.crop_share(), Some(96.0 / 110.0));
        // And what it writes now reads back the same.
        let again: Preparation =
            serde_json::from_value(serde_json::to_value(&preparation).unwrap()).unwrap();
        assert_eq!(again, preparation);
    }

    fn texts(lengths: &[usize], max_length: usize) -> Encoded {
        let tokens = lengths
            .iter()
            .map(|&n| Tokens {
                ids: vec![7; n],
                type_ids: vec![0; n],
            })
            .collect();
        Encoded::Text {
            tokens,
            max_length,
            word_ids: None,
        }
    }

    fn seq_len(inputs: Inputs) -> usize {
        match inputs {
            Inputs::Text { input_ids, .. } => input_ids.dims()[1],
            Inputs::Image(_) => unreachable!(),
        }
    }

    #[test]
    #[allow(deprecated)] // ndarray stays selectable
    fn cpu_batches_pad_to_the_longest_text() {
        for device in [Device::flex(), Device::ndarray()] {
            assert_eq!(sequence_multiple(&device), 1);
            assert_eq!(
                seq_len(texts(&[5, 9], 128).batch(&[0, 1], None, &device)),
                9
            );
        }
    }

    /// wgpu (software Vulkan in CI; GRAFT_SKIP_WGPU=1 skips it where there is no driver).
    #[test]
    fn wgpu_batches_pad_to_a_multiple_of_32_within_max_length() {
        if std::env::var_os("GRAFT_SKIP_WGPU").is_some() {
            return;
        }
        let device = crate::backend::select(crate::Backend::Wgpu)
            .expect("wgpu (set GRAFT_SKIP_WGPU=1 without a Vulkan driver)")
            .device;
        assert_eq!(sequence_multiple(&device), 32);
        assert_eq!(
            seq_len(texts(&[5, 9], 128).batch(&[0, 1], None, &device)),
            32
        );
        assert_eq!(seq_len(texts(&[40], 128).batch(&[0], None, &device)), 64);
        assert_eq!(seq_len(texts(&[40], 50).batch(&[0], None, &device)), 50);
    }
}
