//! A model opened once for inference: a run folder, a PEFT LoRA adapter on its base model, or a
//! pretrained folder (with its own classifier, a transformers `...ForSequenceClassification`
//! head, or none). [`Model::open`] loads it onto a device once; [`Model::predict`],
//! [`Model::evaluate`] and [`Model::embed`] then work on examples held in memory and return
//! values. Reading files and choosing the device are the caller's: `graft`'s commands read a file
//! and call these, and a server holds one `Model` for its lifetime.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::module::Module;
use burn::tensor::Device;
use graft_data::TextExample;
use graft_data::TokenBatch;
use graft_data::tagged::words_and_tags;
use graft_data::tokenize::Tokens;
use graft_model::{Backbone, Inputs, Modality, ModelFolder, Preprocessing};

use crate::bad_rows::{Screen, label_problem, row_problem};
use crate::classifier::{Classifier, extract_features, rows_of, token_rows};
use crate::config::{HeadKind, LoraSection, Precision};
use crate::entities::{TaggedWord, found_entities};
use crate::error::{TrainError, TrainError as E};
use crate::files::{TensorBytes, write_safetensors};
use crate::head::{Head, HeadSpec};
use crate::lora;
use crate::loss::Targets;
use crate::metrics::Report;
use crate::modality::{Encoder, FeatureChoices, Input, Preparation, sequence_multiple};
use crate::progress::Progress;
use crate::run_dir;
use crate::task::classification::{argmax, softmax};
use crate::task::{self, EvaluationPlot, Prediction, Task, TaskSpec};
use graft_model::Pooling;

/// One input: a text, or an image's path, with its label(s) when it is labelled.
pub type Example = TextExample;

/// What kind of model folder a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A graft run (`graft.json`).
    Run,
    /// A PEFT LoRA adapter (`adapter_config.json`) on the base model it names.
    Adapter,
    /// A pretrained model folder, used as it is.
    Pretrained,
}

/// What a path holds, found without loading any weights, so that inputs can be read and checked
/// before a device is probed.
#[derive(Debug, Clone)]
pub struct ModelSource {
    pub path: PathBuf,
    pub kind: SourceKind,
    pub modality: Modality,
    /// A run's input and label columns: the defaults for reading its inputs.
    pub input_column: Option<String>,
    /// A run on pairs of texts: the column of the second text.
    pub pair_column: Option<String>,
    /// An embedding run on triplets: the column of the third text.
    pub negative_column: Option<String>,
    pub label_column: Option<String>,
    /// A run's task and labels.
    pub task: Option<TaskSpec>,
}

impl ModelSource {
    pub fn identify(path: &Path) -> Result<Self, TrainError> {
        let source = |kind, modality, input_column, label_column| ModelSource {
            path: path.to_path_buf(),
            kind,
            modality,
            input_column,
            pair_column: None,
            negative_column: None,
            label_column,
            task: None,
        };
        if run_dir::is_run(path) {
            let manifest = run_dir::read_manifest(path)?;
            // An embedding run on unscored pairs or triplets reads no label.
            let label_column = (manifest.task != Task::Embedding || !manifest.labels.is_empty())
                .then(|| manifest.label_column.clone());
            return Ok(ModelSource {
                task: Some(manifest.task_spec()?),
                pair_column: manifest.pair_column.clone(),
                negative_column: manifest.negative_column.clone(),
                ..source(
                    SourceKind::Run,
                    manifest.preparation.modality(),
                    manifest.input_column,
                    label_column,
                )
            });
        }
        if lora::is_adapter(path) {
            return Ok(source(SourceKind::Adapter, Modality::Text, None, None));
        }
        let google_release = graft_model::google_release::release_dir(path).is_some();
        if path.is_dir() && !path.join("config.json").exists() && !google_release {
            return Err(E::NotAModel {
                path: path.to_path_buf(),
            });
        }
        let modality = match ModelFolder::open(path)?.preprocessing()? {
            Preprocessing::Text(_) => Modality::Text,
            Preprocessing::Image(_) => Modality::Image,
        };
        Ok(source(SourceKind::Pretrained, modality, None, None))
    }

    /// A run folder only (what is evaluated): a missing folder, or one that holds no run, is an
    /// error naming it.
    pub fn run(path: &Path) -> Result<Self, TrainError> {
        run_dir::read_manifest(path)?;
        Self::identify(path)
    }

    /// Labelled examples checked against the run's task before anything is loaded: see
    /// [`Model::evaluate`]. Without a known task they are returned as they are.
    pub fn check_labelled(
        &self,
        examples: Vec<Example>,
        origin: &Path,
    ) -> Result<Vec<Example>, TrainError> {
        match &self.task {
            Some(spec) => screen_labelled(spec, examples, origin),
            None => Ok(examples),
        }
    }

    /// `input` with the run's input (and pair) column where it names none.
    pub fn input(&self, input: &Input) -> Input {
        Input {
            path: input.path.clone(),
            column: input.column.clone().or(self.input_column.clone()),
            pair_column: input.pair_column.clone().or(self.pair_column.clone()),
            negative_column: input
                .negative_column
                .clone()
                .or(self.negative_column.clone()),
        }
    }
}

/// A model loaded onto a device, ready for inference.
pub struct Model {
    source: ModelSource,
    /// The folder embeddings are resolved against: the run folder, the adapter's base model or
    /// the pretrained folder.
    folder: ModelFolder,
    device: Device,
    /// Pooled as the head reads it.
    backbone: Backbone,
    /// The head's inputs, prepared as it was trained on them.
    encoder: Encoder,
    /// The head and how to read its outputs; `None` for a pretrained folder without a classifier.
    head: Option<(Head, TaskSpec)>,
    /// The embedding options last used, with their preparation and encoder.
    embedder: Mutex<Option<(EmbedKey, Preparation, Arc<Encoder>)>>,
}

/// What of [`EmbedOptions`] changes how inputs are prepared.
type EmbedKey = (Option<Pooling>, Option<bool>, Option<usize>);

impl Model {
    /// Opens a run folder, a PEFT adapter or a pretrained folder onto `device`.
    pub fn open(path: &Path, device: &Device) -> Result<Model, TrainError> {
        let source = ModelSource::identify(path)?;
        match source.kind {
            SourceKind::Run => Self::open_run(source, device),
            SourceKind::Adapter => Self::open_adapter(source, device),
            SourceKind::Pretrained => Self::open_pretrained(source, device),
        }
    }

    fn open_run(source: ModelSource, device: &Device) -> Result<Model, TrainError> {
        let run = run_dir::load(&source.path, device)?;
        let spec = run.manifest.task_spec()?;
        let model = run.model.valid();
        Ok(Model {
            source,
            folder: run.folder,
            device: device.clone(),
            backbone: model.backbone,
            encoder: run.encoder,
            head: Some((model.head, spec)),
            embedder: Mutex::new(None),
        })
    }

    /// A pretrained folder with its own classifier: a vision network's, or a text family's
    /// `...ForSequenceClassification` head (its transform and classifier, pooled as the family
    /// pools), with the classes `id2label` names.
    fn open_pretrained(source: ModelSource, device: &Device) -> Result<Model, TrainError> {
        let folder = ModelFolder::open(&source.path)?;
        // A `...ForTokenClassification` folder tags every token with its own classifier.
        let tokens = folder
            .config
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .is_some_and(|a| a.ends_with("ForTokenClassification"));
        let native = if tokens {
            folder.token_head()?
        } else {
            folder.native_head()?
        };
        let choices = match &native {
            Some(_) if tokens => FeatureChoices {
                pooler: Some(false),
                normalize: Some(false),
                ..FeatureChoices::default()
            },
            Some(n) => FeatureChoices {
                pooling: Some(n.pooling),
                pooler: Some(n.use_pooler),
                normalize: Some(false),
                ..FeatureChoices::default()
            },
            None => FeatureChoices::default(),
        };
        let preparation = Preparation::resolve(&folder, &choices, &source.path)?;
        let backbone = Backbone::load(&folder, preparation.pooling(), true, device)?;
        let classifier = match &native {
            Some(native) => match native.saved_classifier(&folder, device)? {
                Some(classifier) => {
                    let transform = native.saved_transform(&folder, device)?;
                    if let (Some(spec), None) = (&native.transform, &transform) {
                        return Err(E::Config {
                            path: folder.weights_path(),
                            message: format!(
                                "{}.weight is there but not the rest of the head ({}.weight)",
                                native.classifier, spec.dense
                            ),
                        });
                    }
                    Some((transform, classifier))
                }
                None => None,
            },
            None => backbone
                .architecture()
                .classifier()
                .map(|classifier| (None, classifier.clone())),
        };
        let head = match classifier {
            Some((transform, classifier)) => {
                let classes = classifier.weight.dims()[1];
                // transformers' rule: the config's problem_type, else regression for one output.
                let task = match folder.config.get("problem_type").and_then(|v| v.as_str()) {
                    _ if tokens => Task::TokenClassification,
                    Some(name) => Task::named(name).map_err(|_| E::Config {
                        path: folder.config_path(),
                        message: format!(
                            "problem_type \"{name}\" is not {}",
                            task::problem_types()
                        ),
                    })?,
                    None if native.is_some() && classes == 1 => Task::Regression,
                    None => Task::Classification,
                };
                let spec = TaskSpec {
                    task,
                    labels: id2label(&folder.config, classes),
                    threshold: 0.5,
                    separator: "|".into(),
                };
                let head = Head {
                    transform,
                    layers: vec![classifier],
                    dropout: burn::nn::DropoutConfig::new(0.0).init(),
                };
                Some((head, spec))
            }
            None => None,
        };
        let mut encoder = preparation.encoder(&folder)?;
        if tokens {
            encoder = encoder.for_words();
        }
        Ok(Model {
            source,
            folder,
            device: device.clone(),
            backbone,
            encoder,
            head,
            embedder: Mutex::new(None),
        })
    }

    /// A PEFT LoRA sequence-classification adapter on its base model, as
    /// `PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(BASE), DIR)`
    /// computes: the adapters merged into the base, the pooler, and the saved classifier.
    fn open_adapter(source: ModelSource, device: &Device) -> Result<Model, TrainError> {
        let dir = &source.path;
        let adapter = lora::PeftAdapter::read(dir)?;
        let base = adapter.base_dir()?;
        let folder = ModelFolder::open(&base)?;
        let Some(native) = folder.native_head()? else {
            return Err(E::Unsupported(format!(
                "{} has no transformers sequence classifier to put the adapter on",
                base.display()
            )));
        };
        let choices = FeatureChoices {
            pooling: Some(native.pooling),
            pooler: Some(native.use_pooler),
            normalize: Some(false),
            ..FeatureChoices::default()
        };
        let preparation = Preparation::resolve(&folder, &choices, &base)?;
        let backbone = Backbone::load(&folder, preparation.pooling(), false, device)?;
        let Some((weight, _)) = adapter.saved_linear(&native.classifier) else {
            return Err(E::Config {
                path: adapter.weights.clone(),
                message: format!(
                    "no {}.weight: the adapter does not save its classifier (modules_to_save = \
                     {:?})",
                    native.classifier,
                    native.modules()
                ),
            });
        };
        let output = weight.shape[0];
        let spec = HeadSpec {
            kind: HeadKind::Native,
            input: backbone.feature_size(),
            hidden: Vec::new(),
            output,
            dropout: 0.0,
            native: Some(native.clone()),
        };
        let head = adapter.head(&spec, device).ok_or_else(|| E::Config {
            path: adapter.weights.clone(),
            message: format!(
                "the saved head does not fit {}: {}.weight must be [{output}, {}]{}",
                native.model,
                native.classifier,
                backbone.feature_size(),
                native.transform.as_ref().map_or(String::new(), |t| format!(
                    " and {}.weight must be saved",
                    t.dense
                ))
            ),
        })?;
        let (backbone, _) = lora::attach(backbone, &LoraSection::from_adapter(dir.clone()))?;
        let backbone = backbone.materialize();
        // graft's exports name the classes in labels.json; otherwise they are numbered.
        let labels = std::fs::read_to_string(dir.join("labels.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<Vec<String>>(&text).ok())
            .filter(|labels| labels.len() == output)
            .unwrap_or_else(|| (0..output).map(|c| c.to_string()).collect());
        let task = TaskSpec {
            task: Task::Classification,
            labels,
            threshold: 0.5,
            separator: "|".into(),
        };
        let encoder = preparation.encoder(&folder)?;
        Ok(Model {
            source,
            folder,
            device: device.clone(),
            backbone,
            encoder,
            head: Some((head, task)),
            embedder: Mutex::new(None),
        })
    }

    /// The model with its backbone computing in `precision` (f16 or bf16 halve the memory its
    /// weights and activations take; the head and the outputs stay f32). Fails when the device
    /// has no such arithmetic.
    pub fn with_precision(mut self, precision: Precision) -> Result<Model, TrainError> {
        crate::precision::check_supported(&self.device, precision)?;
        self.backbone = crate::precision::cast_model(&self.backbone, precision);
        Ok(self)
    }

    /// The number of tokens of each text as the model reads it (truncated to its length), for a
    /// server's token budget; `None` for images, or texts the tokenizer refuses.
    pub fn token_lengths(&self, examples: &[Example]) -> Option<Vec<usize>> {
        let Encoder::Text(tokenizer) = &self.encoder else {
            return None;
        };
        let tokens = if examples.iter().all(|e| e.pair.is_some()) && !examples.is_empty() {
            let pairs: Vec<(&str, &str)> = examples
                .iter()
                .map(|e| (e.text.as_str(), e.pair.as_deref().unwrap_or_default()))
                .collect();
            tokenizer.tokenize_pairs(&pairs).ok()?
        } else {
            let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
            tokenizer.tokenize(&texts).ok()?
        };
        Some(tokens.iter().map(|t| t.ids.len()).collect())
    }

    /// A run trained on pairs of texts reads pairs, and a run trained on single texts reads
    /// single texts: anything else is an error, not a silently wrong score.
    fn check_pairs(&self, examples: &[Example]) -> Result<(), TrainError> {
        if self.source.kind != SourceKind::Run {
            return Ok(());
        }
        let pairs = examples.iter().filter(|e| e.pair.is_some()).count();
        match &self.source.pair_column {
            Some(column) if pairs < examples.len() => Err(E::Unsupported(format!(
                "{} was trained on pairs of texts (the second from `{column}`); give each input \
                 its second text",
                self.source.path.display()
            ))),
            None if pairs > 0 => Err(E::Unsupported(format!(
                "{} was trained on single texts; it does not read pairs",
                self.source.path.display()
            ))),
            _ => Ok(()),
        }
    }

    /// The backbone, the head, the input encoder and the folder the model reads, for an exporter.
    pub(crate) fn parts(&self) -> (&Backbone, Option<&Head>, &Encoder, &ModelFolder) {
        (
            &self.backbone,
            self.head.as_ref().map(|(head, _)| head),
            &self.encoder,
            &self.folder,
        )
    }

    /// What the model was opened from.
    pub fn source(&self) -> &ModelSource {
        &self.source
    }

    /// The task and classes of its head, if it has one.
    pub fn task(&self) -> Option<&TaskSpec> {
        self.head.as_ref().map(|(_, spec)| spec)
    }

    fn head(&self) -> Result<&(Head, TaskSpec), TrainError> {
        self.head.as_ref().ok_or_else(|| E::Config {
            path: self.folder.config_path(),
            message: "the model has no classifier of its own; train a head with `graft train` \
                      and predict with the run folder"
                .into(),
        })
    }

    /// The head's raw outputs `[n][k]` for every example, in order. The examples are encoded and
    /// run one window of [`WINDOW`] at a time, so memory holds one window's tokens or pixels.
    pub fn outputs(
        &self,
        examples: &[Example],
        batch_size: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<Vec<f32>>, TrainError> {
        check_batch_size(batch_size)?;
        let (head, spec) = self.head()?;
        if spec.task == Task::TokenClassification {
            return Err(E::Unsupported(
                "a token classifier's outputs are per token, not per text: predict its entities \
                 instead"
                    .into(),
            ));
        }
        if spec.task == Task::Embedding {
            return Err(E::Unsupported(format!(
                "{} is an embedding model: it predicts no labels; embed the texts instead",
                self.source.path.display()
            )));
        }
        self.check_pairs(examples)?;
        self.head_rows(examples, batch_size, head, "running", progress)
    }

    /// `head`'s rows for every example, in order, encoded and run one window of [`WINDOW`] at a
    /// time.
    fn head_rows(
        &self,
        examples: &[Example],
        batch_size: usize,
        head: &Head,
        stage: &str,
        progress: &dyn Progress,
    ) -> Result<Vec<Vec<f32>>, TrainError> {
        progress.stage(stage, examples.len());
        let mut rows = Vec::with_capacity(examples.len());
        for window in examples.chunks(WINDOW) {
            let data = self.encoder.encode(window)?;
            let features = extract_features(
                &self.backbone,
                &data,
                None,
                batch_size,
                &self.device,
                progress,
            );
            rows.extend(rows_of(head.forward(features)));
        }
        progress.finish_stage();
        Ok(rows)
    }

    /// Predictions for every example, in order (images name their input).
    pub fn predict(
        &self,
        examples: &[Example],
        batch_size: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<Prediction>, TrainError> {
        let (_, spec) = self.head()?;
        if spec.task == Task::TokenClassification {
            return self.predict_entities(examples, batch_size, progress);
        }
        let outputs = self.outputs(examples, batch_size, progress)?;
        let mut predictions = spec.predictions(&outputs);
        if self.source.modality == Modality::Image {
            for (p, example) in predictions.iter_mut().zip(examples) {
                p.input = Some(example.text.clone());
            }
        }
        Ok(predictions)
    }

    /// Scores labelled examples: a report and its picture. Rows that cannot be scored (an empty
    /// input or label, a label the model does not know) are errors naming `origin` (the file the
    /// examples came from, or any name for examples made in memory) and the example's line.
    pub fn evaluate(
        &self,
        examples: Vec<Example>,
        origin: &Path,
        batch_size: usize,
        progress: &dyn Progress,
    ) -> Result<Evaluation, TrainError> {
        check_batch_size(batch_size)?;
        let (_, spec) = self.head()?;
        let examples = screen_labelled(spec, examples, origin)?;
        let targets = spec.targets(&examples, origin)?;
        let (outputs, targets) = match targets {
            Targets::Words(words) => self.token_outputs(&examples, words, batch_size, progress)?,
            Targets::Texts(texts) => (
                self.text_embeddings(&examples, batch_size, progress)?,
                Targets::Texts(texts),
            ),
            targets => (self.outputs(&examples, batch_size, progress)?, targets),
        };
        let report = spec.report(&outputs, &targets, None);
        let plot = spec.evaluation_plot(&report, &outputs, &targets);
        Ok(Evaluation { report, plot })
    }

    /// An embedding run's embeddings of every text of each example (its text, second text and
    /// negative), example-major, as training computed them.
    fn text_embeddings(
        &self,
        examples: &[Example],
        batch_size: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<Vec<f32>>, TrainError> {
        let (head, _) = self.head()?; // no layers: the rows are the embeddings
        let texts = crate::modality::each_text(examples);
        self.head_rows(&texts, batch_size, head, "embedding", progress)
    }

    /// Embeddings of the examples with the backbone as it is (no head). Text: pooled hidden
    /// states as the folder's sentence-transformers defaults or `options` say (CLS is the raw
    /// `[CLS]` state, as sentence-transformers defines it); images: the backbone's pooled
    /// features (or the family's own embedding, such as CLIP's projection).
    pub fn embed(
        &self,
        examples: &[Example],
        options: &EmbedOptions,
        progress: &dyn Progress,
    ) -> Result<Embeddings, TrainError> {
        let mut values = Vec::new();
        let shape = self.embed_windows(examples, options, progress, |_, _, rows| {
            values.extend_from_slice(rows);
            Ok(())
        })?;
        Ok(Embeddings { values, ..shape })
    }

    /// [`embed`](Self::embed) one window of [`WINDOW`] examples at a time:
    /// `write(shape, first, rows)` gets each window's rows (row-major) as soon as they are
    /// computed, in input order, with the first row's index and the whole output's shape and
    /// settings, so memory holds one window's work and not the whole output. Returns that shape,
    /// with no values.
    pub fn embed_windows(
        &self,
        examples: &[Example],
        options: &EmbedOptions,
        progress: &dyn Progress,
        mut write: impl FnMut(&Embeddings, usize, &[f32]) -> Result<(), TrainError>,
    ) -> Result<Embeddings, TrainError> {
        check_batch_size(options.batch_size)?;
        let (backbone, encoder) = self.embedding_backbone(options)?;
        let pooling = backbone.pooling;
        let shape = Embeddings {
            n: examples.len(),
            width: backbone.feature_size(),
            values: Vec::new(),
            pooling: (self.source.modality == Modality::Text).then_some(pooling.pooling),
            normalize: pooling.normalize,
        };
        progress.stage("embedding", examples.len());
        for (i, window) in examples.chunks(WINDOW).enumerate() {
            let data = encoder.encode(window)?;
            let features = extract_features(
                &backbone,
                &data,
                None,
                options.batch_size,
                &self.device,
                progress,
            );
            let values = features
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("f32 data");
            write(&shape, i * WINDOW, &values)?;
        }
        progress.finish_stage();
        Ok(shape)
    }
}

/// A sentence as a token classifier reads it: its token ids, each token's word (`None` for
/// special tokens) and every token's logits `[tokens][tags]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogits {
    pub ids: Vec<u32>,
    pub word_ids: Vec<Option<u32>>,
    pub logits: Vec<Vec<f32>>,
}

/// Token classification.
impl Model {
    /// Every token's logits for sentences given as words, tokenized as transformers'
    /// `tokenizer(words, is_split_into_words=True)` (truncated to the model's length).
    pub fn token_logits(
        &self,
        sentences: &[Vec<String>],
        batch_size: usize,
    ) -> Result<Vec<TokenLogits>, TrainError> {
        check_batch_size(batch_size)?;
        let (head, spec) = self.head()?;
        let Encoder::Words(tokenizer, _) = &self.encoder else {
            return Err(E::Unsupported(format!(
                "{} is not a token classifier ({} model)",
                self.source.path.display(),
                spec.task.logic().config_name()
            )));
        };
        let model = self.classifier(head);
        let multiple = sequence_multiple(&self.device);
        let mut out = Vec::with_capacity(sentences.len());
        for batch in tokenizer.tokenize_words(sentences)?.chunks(batch_size) {
            let rows: Vec<&Tokens> = batch.iter().map(|w| &w.tokens).collect();
            let padded = TokenBatch::pad_to_multiple(&rows, multiple, tokenizer.max_length());
            let (input_ids, token_type_ids, attention_mask) = padded.to_tensors(&self.device);
            let logits = token_logits_of(&model, input_ids, token_type_ids, attention_mask);
            let [_, seq, k] = logits.dims();
            let values: Vec<f32> = logits.into_data().try_into_vec_as::<f32>().expect("f32");
            for (row, words) in batch.iter().enumerate() {
                let logits = (0..words.tokens.ids.len())
                    .map(|p| values[(row * seq + p) * k..][..k].to_vec())
                    .collect();
                out.push(TokenLogits {
                    ids: words.tokens.ids.clone(),
                    word_ids: words.word_ids.clone(),
                    logits,
                });
            }
        }
        Ok(out)
    }

    /// The model as one module, for the token forward pass.
    fn classifier(&self, head: &Head) -> Classifier {
        Classifier {
            backbone: self.backbone.clone(),
            head: head.clone(),
        }
    }

    /// One output row per labelled token of tagged sentences (each word's first token), and the
    /// word targets aligned with the tokens, one window of [`WINDOW`] sentences at a time.
    fn token_outputs(
        &self,
        examples: &[Example],
        words: Vec<Vec<usize>>,
        batch_size: usize,
        progress: &dyn Progress,
    ) -> Result<(Vec<Vec<f32>>, Targets), TrainError> {
        let (head, spec) = self.head()?;
        let classifier = self.classifier(head);
        progress.stage("running", examples.len());
        let (mut rows, mut aligned) = (Vec::new(), Vec::new());
        for (window, sentences) in examples.chunks(WINDOW).zip(words.chunks(WINDOW)) {
            let data = self.encoder.encode(window)?;
            let targets = Targets::Words(sentences.to_vec()).aligned(
                data.word_ids().unwrap_or_default(),
                false,
                &spec.labels,
            );
            rows.extend(token_rows(
                &classifier,
                &data,
                &targets,
                batch_size,
                &self.device,
            ));
            if let Targets::Tokens(t) = targets {
                aligned.extend(t);
            }
            progress.advance(window.len());
        }
        progress.finish_stage();
        Ok((rows, Targets::Tokens(aligned)))
    }

    /// The entities of raw texts, as transformers' token-classification pipeline finds them with
    /// `aggregation_strategy="first"`: each word (its tokens as the pipeline joins them) takes its
    /// first token's tag and probability, and words group into entities by their tags.
    fn predict_entities(
        &self,
        examples: &[Example],
        batch_size: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<Prediction>, TrainError> {
        check_batch_size(batch_size)?;
        let (head, spec) = self.head()?;
        let Some(tokenizer) = self.encoder.tokenizer() else {
            return Err(E::Unsupported("token classification reads text".into()));
        };
        let model = self.classifier(head);
        let multiple = sequence_multiple(&self.device);
        progress.stage("running", examples.len());
        let mut predictions = Vec::with_capacity(examples.len());
        for window in examples.chunks(WINDOW) {
            // Sentences given as words (a CoNLL file, a list column) are read as the words
            // joined by spaces.
            let joined: Vec<String> = window
                .iter()
                .map(|e| match words_and_tags(e, Path::new("")) {
                    Ok((words, _)) => words.join(" "),
                    Err(_) => e.text.clone(),
                })
                .collect();
            let texts: Vec<&str> = joined.iter().map(String::as_str).collect();
            let spans = tokenizer.tokenize_spans(&texts)?;
            for (batch, texts) in spans.chunks(batch_size).zip(texts.chunks(batch_size)) {
                let rows: Vec<&Tokens> = batch.iter().map(|s| &s.tokens).collect();
                let padded = TokenBatch::pad_to_multiple(&rows, multiple, tokenizer.max_length());
                let (input_ids, token_type_ids, attention_mask) = padded.to_tensors(&self.device);
                let logits = token_logits_of(&model, input_ids, token_type_ids, attention_mask);
                let [_, seq, k] = logits.dims();
                let values: Vec<f32> = logits.into_data().try_into_vec_as::<f32>().expect("f32");
                for (row, (spanned, text)) in batch.iter().zip(texts).enumerate() {
                    let mut words: Vec<TaggedWord> = Vec::new();
                    for (position, &(start, end)) in spanned.offsets.iter().enumerate() {
                        if spanned.special[position] {
                            continue;
                        }
                        match words.last_mut() {
                            Some(word) if spanned.subword[position] => word.end = end,
                            _ => {
                                let offset = (row * seq + position) * k;
                                let probabilities = softmax(&values[offset..offset + k]);
                                let best = argmax(&probabilities);
                                words.push(TaggedWord {
                                    tag: spec.labels[best].clone(),
                                    score: probabilities[best],
                                    start,
                                    end,
                                });
                            }
                        }
                    }
                    predictions.push(Prediction {
                        entities: Some(found_entities(text, &words)),
                        ..Prediction::default()
                    });
                }
                progress.advance(batch.len());
            }
        }
        progress.finish_stage();
        Ok(predictions)
    }
}

impl Model {
    /// The backbone computing embeddings as `options` ask, and its input encoder.
    pub(crate) fn embedding_backbone(
        &self,
        options: &EmbedOptions,
    ) -> Result<(Backbone, Arc<Encoder>), TrainError> {
        let (preparation, encoder) = self.embedder(options)?;
        let mut pooling = preparation.pooling();
        if let Some(normalize) = options.normalize {
            pooling.normalize = normalize;
        }
        let mut backbone = self.backbone.clone();
        backbone.pooling = pooling;
        backbone.embedding = true;
        Ok((backbone, encoder))
    }
}

/// Examples encoded and run at a time by [`Model::outputs`] and [`Model::embed_windows`]: large
/// enough that sorting by length inside it keeps padding low, small enough that its tokens,
/// pixels and features stay a bounded share of memory.
pub const WINDOW: usize = 4096;

impl Model {
    /// How `options` prepare the inputs of embeddings, and their encoder: resolved against the
    /// folder once and kept for the next call with the same options (a server's requests do not
    /// read the tokenizer again).
    fn embedder(&self, options: &EmbedOptions) -> Result<(Preparation, Arc<Encoder>), TrainError> {
        let key = (options.pooling, options.normalize, options.max_length);
        let mut kept = self.embedder.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, preparation, encoder)) = kept.as_ref()
            && *k == key
        {
            return Ok((preparation.clone(), encoder.clone()));
        }
        let choices = FeatureChoices {
            pooling: options.pooling,
            normalize: options.normalize,
            max_length: options.max_length,
            pooler: Some(false),
            ..FeatureChoices::default()
        };
        let preparation = Preparation::resolve(&self.folder, &choices, &self.folder.dir)?;
        let encoder = Arc::new(preparation.encoder(&self.folder)?);
        *kept = Some((key, preparation.clone(), encoder.clone()));
        Ok((preparation, encoder))
    }
}

/// Every token's logits `[batch, seq, k]` (f32) of a padded batch.
fn token_logits_of(
    model: &Classifier,
    input_ids: burn::tensor::Tensor<2, burn::tensor::Int>,
    token_type_ids: burn::tensor::Tensor<2, burn::tensor::Int>,
    attention_mask: Option<burn::tensor::Tensor<2, burn::tensor::Int>>,
) -> burn::tensor::Tensor<3> {
    let states = model
        .backbone
        .forward_tokens(Inputs::Text {
            input_ids,
            token_type_ids,
            attention_mask,
        })
        .expect("a text backbone");
    crate::precision::to_f32(model.head.forward(states))
}

/// Rows that cannot be scored against `spec` are errors naming `origin` and the line; unknown
/// labels too.
fn screen_labelled(
    spec: &TaskSpec,
    examples: Vec<Example>,
    origin: &Path,
) -> Result<Vec<Example>, TrainError> {
    let examples = Screen::inputs().apply(origin, examples, |e| {
        row_problem(spec.task, e).or_else(|| label_problem(spec, e))
    })?;
    spec.targets(&examples, origin)?;
    Ok(examples)
}

/// A batch size of 0 is an error.
pub fn check_batch_size(batch_size: usize) -> Result<(), TrainError> {
    if batch_size == 0 {
        return Err(E::Unsupported("the batch size must be at least 1".into()));
    }
    Ok(())
}

/// The class names of a `config.json` when it names all `classes`: transformers' `id2label`, or
/// timm's `label_names`; else the indices.
fn id2label(config: &serde_json::Value, classes: usize) -> Vec<String> {
    let transformers = config.get("id2label").and_then(|map| {
        (0..classes)
            .map(|i| map.get(i.to_string())?.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
    });
    let timm = || {
        let names = config.get("label_names")?.as_array()?;
        (names.len() == classes)
            .then(|| {
                names
                    .iter()
                    .map(|n| n.as_str().map(String::from))
                    .collect::<Option<Vec<_>>>()
            })
            .flatten()
    };
    transformers
        .or_else(timm)
        .unwrap_or_else(|| (0..classes).map(|c| c.to_string()).collect())
}

/// An evaluation: the report and its picture (a confusion matrix, one per label for
/// multi-label, or predicted against true values).
pub struct Evaluation {
    pub report: Report,
    pub plot: Option<EvaluationPlot>,
}

/// How [`Model::embed`] pools; `None` takes the model folder's defaults.
#[derive(Debug, Clone, Default)]
pub struct EmbedOptions {
    pub pooling: Option<Pooling>,
    pub normalize: Option<bool>,
    pub max_length: Option<usize>,
    pub batch_size: usize,
}

/// Embeddings `[n, width]`, and how they were pooled.
pub struct Embeddings {
    pub n: usize,
    pub width: usize,
    /// Row-major `[n, width]`.
    pub values: Vec<f32>,
    /// Text: the pooling used; images: the architecture's own.
    pub pooling: Option<Pooling>,
    pub normalize: bool,
}

impl Embeddings {
    /// Writes one f32 tensor `embeddings` of shape `[n, width]`, atomically.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let tensor = TensorBytes::f32("embeddings", vec![self.n, self.width], &self.values);
        write_safetensors(path, &[tensor], Some(self.metadata()))
    }

    /// The file's `__metadata__`: the pooling and whether the rows are normalized.
    fn metadata(&self) -> std::collections::HashMap<String, String> {
        let mut metadata = std::collections::HashMap::from([(
            "normalize".to_string(),
            self.normalize.to_string(),
        )]);
        if let Some(pooling) = self.pooling {
            metadata.insert("pooling".into(), pooling.name().into());
        }
        metadata
    }
}

/// Embeddings computed by N workers (`graft embed --shard I/N`): worker I embeds the I-th of N
/// contiguous slices of the inputs into its own file, and `manifest.json` lists the files with
/// their rows in input order, so graft ([`EmbeddingShards::read`]) or Python's safetensors
/// (concatenating the files in the manifest's order) stitch them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingShards {
    pub rows: usize,
    pub count: usize,
}

impl EmbeddingShards {
    pub fn new(rows: usize, count: usize) -> Self {
        Self { rows, count }
    }

    /// The rows of slice `index`: the same split every worker computes.
    pub fn rows(&self, index: usize) -> std::ops::Range<usize> {
        (index * self.rows / self.count)..((index + 1) * self.rows / self.count)
    }

    /// The file of slice `index` in the output folder.
    pub fn file(&self, index: usize) -> String {
        format!("embeddings-{index:05}-of-{:05}.safetensors", self.count)
    }

    /// Writes `manifest.json` (each worker writes the same one, atomically).
    pub fn write_manifest(&self, dir: &Path, width: usize) -> Result<(), TrainError> {
        let shards: Vec<serde_json::Value> = (0..self.count)
            .map(|i| {
                let rows = self.rows(i);
                serde_json::json!({"file": self.file(i), "first_row": rows.start, "rows": rows.len()})
            })
            .collect();
        let manifest = serde_json::json!({
            "tensor": "embeddings",
            "rows": self.rows,
            "width": width,
            "shards": shards,
        });
        crate::files::write_json_atomic(&dir.join("manifest.json"), &manifest)
    }

    /// The whole `[rows, width]` from a folder the workers filled, in input order; a missing or
    /// short shard is an error naming its file.
    pub fn read(dir: &Path) -> Result<Vec<f32>, TrainError> {
        let manifest_path = dir.join("manifest.json");
        let text =
            std::fs::read_to_string(&manifest_path).map_err(TrainError::io(&manifest_path))?;
        let bad = |message: String| E::Config {
            path: manifest_path.clone(),
            message,
        };
        let manifest: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let width = manifest["width"]
            .as_u64()
            .ok_or_else(|| bad("no width".into()))? as usize;
        let mut values = Vec::new();
        for shard in manifest["shards"]
            .as_array()
            .ok_or_else(|| bad("no shards".into()))?
        {
            let file = dir.join(
                shard["file"]
                    .as_str()
                    .ok_or_else(|| bad("a shard without a file".into()))?,
            );
            let rows = shard["rows"].as_u64().unwrap_or(0) as usize;
            let tensor = graft_model::weights::read_tensors(&file)
                .map_err(|e| E::Config {
                    path: file.clone(),
                    message: e.to_string(),
                })?
                .into_iter()
                .find(|t| t.name == "embeddings")
                .filter(|t| t.shape == [rows, width] && t.dtype == safetensors::Dtype::F32)
                .ok_or_else(|| E::Config {
                    path: file.clone(),
                    message: format!(
                        "expected an f32 tensor `embeddings` of shape [{rows}, {width}]"
                    ),
                })?;
            values.extend(
                tensor
                    .bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        Ok(values)
    }
}

/// The file [`Embeddings::save`] writes, filled a window of rows at a time: the header for
/// `[n, width]` first, then each window's rows in place, so the rows never all sit in memory. It
/// replaces `path` only once every row is written (an interrupted run leaves an earlier file as
/// it was).
pub struct EmbeddingsFile {
    path: std::path::PathBuf,
    staging: std::path::PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    width: usize,
    /// The next row the file expects.
    next_row: usize,
    rows: usize,
}

impl EmbeddingsFile {
    /// Starts the file of `shape` (its values are not read) beside `path`.
    pub fn create(path: &Path, shape: &Embeddings) -> Result<Self, TrainError> {
        let bytes = shape.n * shape.width * 4;
        let header = serde_json::json!({
            "__metadata__": shape.metadata(),
            "embeddings": {
                "dtype": "F32",
                "shape": [shape.n, shape.width],
                "data_offsets": [0, bytes],
            },
        })
        .to_string();
        // safetensors pads the header with spaces to a multiple of 8 bytes.
        let header = format!("{header:<width$}", width = header.len().div_ceil(8) * 8);
        let name = path
            .file_name()
            .map_or("embeddings".into(), |n| n.to_string_lossy().to_string());
        let staging = path.with_file_name(format!(".{name}.graft-partial"));
        let mut file = std::fs::File::create(&staging)
            .map(std::io::BufWriter::new)
            .map_err(TrainError::io(&staging))?;
        use std::io::Write;
        file.write_all(&(header.len() as u64).to_le_bytes())
            .and_then(|()| file.write_all(header.as_bytes()))
            .map_err(TrainError::io(&staging))?;
        Ok(Self {
            path: path.to_path_buf(),
            staging,
            file,
            width: shape.width,
            next_row: 0,
            rows: shape.n,
        })
    }

    /// Writes the rows from `first` on (row-major `values`); windows come in order.
    pub fn write_rows(&mut self, first: usize, values: &[f32]) -> Result<(), TrainError> {
        use std::io::Write;
        debug_assert_eq!(first, self.next_row, "windows arrive in order");
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for value in values {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        self.file
            .write_all(&bytes)
            .map_err(TrainError::io(&self.staging))?;
        self.next_row = first + values.len() / self.width.max(1);
        Ok(())
    }

    /// Checks every row was written, then puts the file in place of `path`.
    pub fn finish(self) -> Result<(), TrainError> {
        if self.next_row != self.rows {
            return Err(TrainError::Write {
                path: self.path.clone(),
                message: format!("{} of {} rows were written", self.next_row, self.rows),
            });
        }
        let io = TrainError::io(&self.staging);
        let file = self.file.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(&io)?;
        std::fs::rename(&self.staging, &self.path).map_err(TrainError::io(&self.path))
    }
}
