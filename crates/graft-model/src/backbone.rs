//! The one interface every architecture implements, and the registry that lists them.
//!
//! An architecture file (`bert.rs`, `efficientnet.rs`, ...) holds its config, its modules and an
//! [`Architecture`] impl: how to recognise its `config.json`, build and load it, run it to
//! features, name and group its parameters, preprocess its inputs and export it. [`registry!`]
//! turns the list of architectures into the [`Network`] enum (a burn module) and the
//! [`ArchitectureId`] dispatch, so adding an architecture is its file plus one line below. Nothing
//! outside this crate names an architecture: the rest of graft sees a [`Backbone`].

use std::path::PathBuf;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::Linear;
use burn::tensor::{DType, Device, FloatDType, Int, Tensor};
use serde_json::Value;

use crate::pooling::{PoolingOptions, l2_normalize};
use crate::{ModelError, ModelFolder, NativeHead, WeightsIndex};

/// What a model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    Text,
    Image,
}

/// One batch of model inputs.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // built once per batch; boxing would only add indirection
pub enum Inputs {
    /// Token ids `[batch, seq]`; the mask is 1 for tokens, 0 for padding, `None` when nothing is
    /// padded.
    Text {
        input_ids: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    },
    /// Normalized pixels `[batch, 3, height, width]`.
    Image(Tensor<4>),
}

/// A text model's inputs: token ids, token types and the mask.
pub type TextInputs = (Tensor<2, Int>, Tensor<2, Int>, Option<Tensor<2, Int>>);

impl Inputs {
    /// The images; token ids given to an image backbone are a caller's bug.
    pub fn into_image(self) -> Tensor<4> {
        match self {
            Self::Image(images) => images,
            Self::Text { .. } => panic!("an image backbone was given token ids"),
        }
    }

    /// The text inputs; images given to a text encoder are a caller's bug.
    pub fn into_text(self) -> TextInputs {
        match self {
            Self::Text {
                input_ids,
                token_type_ids,
                attention_mask,
            } => (input_ids, token_type_ids, attention_mask),
            Self::Image(_) => panic!("a text encoder was given images"),
        }
    }

    /// The padding mask of text inputs; `None` when nothing is padded, and for images.
    pub fn attention_mask(&self) -> Option<Tensor<2, Int>> {
        match self {
            Self::Text { attention_mask, .. } => attention_mask.clone(),
            Self::Image(_) => None,
        }
    }
}

/// How a folder's images become model inputs (one type from the folder to the run to the export).
pub use graft_data::image::ImageTransform;

/// How a folder's texts become token ids.
#[derive(Debug, Clone, PartialEq)]
pub struct TextTransform {
    pub tokenizer: PathBuf,
    pub vocab_size: usize,
    /// The longest input the position embeddings allow.
    pub max_positions: usize,
    /// Whether the checkpoint has a pretrained pooler for CLS pooling.
    pub has_pooler: bool,
}

/// The preprocessing a model folder asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Preprocessing {
    Text(TextTransform),
    Image(ImageTransform),
}

/// A folder layout an architecture can be exported as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// transformers' `AutoModelForSequenceClassification`.
    Transformers,
    /// sentence-transformers' `SentenceTransformer`.
    SentenceTransformers,
    /// `timm.create_model(name, num_classes=N)`.
    Timm,
    /// `torchvision.models.<name>(num_classes=N)`.
    Torchvision,
}

/// One export an architecture offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportTarget {
    pub format: ExportFormat,
    /// transformers: the `architectures` entry; timm and torchvision: the model name.
    pub model: String,
    /// Where the backbone's tensors go in that layout (`bert.` for a transformers classifier).
    pub prefix: String,
    /// The name of the classifier the new head becomes (`classifier`, `fc`).
    pub classifier: String,
    /// Other classifiers that get the same weights (timm's distilled DeiT averages `head` and
    /// `head_dist` on the class and distillation tokens, which is graft's head on their mean).
    pub classifier_copies: Vec<String>,
}

impl ExportTarget {
    /// A timm model `model` whose classifier is `classifier` (timm's CNNs).
    pub fn timm(model: impl Into<String>) -> Self {
        Self {
            format: ExportFormat::Timm,
            model: model.into(),
            prefix: String::new(),
            classifier: "classifier".into(),
            classifier_copies: Vec::new(),
        }
    }
}

/// Which names a folder's weights use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// The architecture's upstream names (transformers, torchvision, the original checkpoint).
    Upstream,
    /// The names of an export format (a timm folder).
    Export(ExportFormat),
}

/// What every architecture gives the rest of graft. Paths are burn module paths inside the
/// architecture's own module, with PyTorch's `weight`/`bias` for norm parameters.
pub trait Architecture {
    /// The registry name (`bert`, `efficientnet_lite`, `resnet`).
    fn name() -> &'static str
    where
        Self: Sized;
    /// Whether this architecture reads a folder whose `config.json` is `config`.
    fn detects(config: &Value) -> bool
    where
        Self: Sized;
    /// The preprocessing the folder asks for (read from its config files).
    fn preprocessing(folder: &ModelFolder) -> Result<Preprocessing, ModelError>
    where
        Self: Sized;
    /// The names the folder's weights use.
    fn naming(_folder: &ModelFolder) -> Result<Naming, ModelError>
    where
        Self: Sized,
    {
        Ok(Naming::Upstream)
    }
    /// What a bare weights file holds, guessed from its tensor names, if it looks like this
    /// architecture.
    fn recognise(_index: &WeightsIndex) -> Option<String>
    where
        Self: Sized,
    {
        None
    }
    /// The family's own sequence-classification head, as transformers builds it from this
    /// folder's config, if the family has one graft can build.
    fn native_head(_folder: &ModelFolder) -> Result<Option<NativeHead>, ModelError>
    where
        Self: Sized,
    {
        Ok(None)
    }
    /// Builds the model `config.json` describes and loads its weights, every tensor checked for
    /// presence and shape first. `classifier`: keep the checkpoint's own classifier, if any.
    fn load(folder: &ModelFolder, classifier: bool, device: &Device) -> Result<Self, ModelError>
    where
        Self: Sized;

    /// A one-line description (`bert (6 layers)`).
    fn describe(&self) -> String;
    /// Width of the features [`Architecture::forward_features`] returns.
    fn feature_size(&self) -> usize;
    /// Pooled features `[batch, feature_size]` (before any L2 normalization): what a head reads.
    /// A text family's are its [`Architecture::forward_tokens`] pooled over the mask.
    fn forward_features(&self, inputs: Inputs, pooling: PoolingOptions) -> Tensor<2>;
    /// Per-token hidden states `[batch, seq, hidden]` (the encoder's last layer, before pooling)
    /// for text families, `hidden` being their `feature_size`; `None` for vision families. Only
    /// the positions the mask keeps are meaningful: padding holds whatever the encoder computed.
    fn forward_tokens(&self, _inputs: Inputs) -> Option<Tensor<3>> {
        None
    }
    /// What `embed` writes, where the family's embedding is not its classifier's input (CLIP's
    /// projected image embedding); default: [`Architecture::forward_features`].
    fn forward_embedding(&self, inputs: Inputs, pooling: PoolingOptions) -> Tensor<2> {
        self.forward_features(inputs, pooling)
    }
    /// Width of [`Architecture::forward_embedding`]'s output.
    fn embedding_size(&self) -> usize {
        self.feature_size()
    }
    /// The checkpoint's own classifier, if it was loaded.
    fn classifier(&self) -> Option<&Linear> {
        None
    }
    /// The upstream name of a parameter path.
    fn upstream_name(&self, path: &str) -> String;
    /// The name of a parameter path in an export format's layout (default: the upstream name).
    fn export_name(&self, _format: ExportFormat, path: &str) -> String {
        self.upstream_name(path)
    }
    /// The block a parameter belongs to: 0 is the embeddings or stem, up to `num_blocks() - 1`.
    fn block_of(&self, path: &str) -> usize;
    fn num_blocks(&self) -> usize;
    /// Whether the path belongs to a BatchNorm layer.
    fn is_batchnorm(&self, _path: &str) -> bool {
        false
    }
    /// The folder layouts this architecture exports to.
    fn exports(&self) -> Vec<ExportTarget>;
    /// Why the architecture has no export layout at all, when [`Architecture::exports`] is
    /// empty. Default: none.
    fn export_unavailable(&self) -> Option<String> {
        None
    }
    /// The shape a tensor takes in an export in `format` under its exported `name`, when it is
    /// not the module's (a linear layer written as a 1x1 convolution). Default: the module's.
    fn export_shape(
        &self,
        _format: ExportFormat,
        _name: &str,
        _shape: &[usize],
    ) -> Option<Vec<usize>> {
        None
    }
    /// Why an image model trained at `image_size` has no export layout that computes what it
    /// does at that size. Default: none.
    fn export_unavailable_at(&self, _image_size: usize) -> Option<String> {
        None
    }
    /// The `config.json` of an export in `format`, when the model folder's own config is not
    /// already that library's (a graft vision folder exported for transformers). Default: none.
    fn export_config(&self, _format: ExportFormat) -> Option<Value> {
        None
    }
    /// `model_args` a timm export states so that timm builds this network at an input side
    /// (a ViT's `img_size`: timm then resamples the checkpoint's position embeddings to that grid
    /// as it loads them, as graft does). Default: none.
    fn timm_model_args(&self, _image_size: usize) -> serde_json::Map<String, Value> {
        serde_json::Map::new()
    }
    /// The linear layers LoRA adapts when the config names none: PEFT's default for the
    /// family (`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`) where it has one, else the
    /// attention's query and value projections by the family's names.
    fn lora_targets(&self) -> &'static [&'static str] {
        &[]
    }
}

/// Declares the architectures graft knows: one `Variant => type` line each.
macro_rules! registry {
    ($($variant:ident => $ty:ty),* $(,)?) => {
        /// The network of any registered architecture.
        #[derive(Module, Debug)]
        #[allow(clippy::large_enum_variant)] // one per model; boxing would only add indirection
        pub enum Network {
            $($variant($ty)),*
        }

        /// A registered architecture.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ArchitectureId {
            $($variant),*
        }

        impl ArchitectureId {
            pub const ALL: &'static [ArchitectureId] = &[$(Self::$variant),*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => <$ty as Architecture>::name()),*
                }
            }

            fn detects(self, config: &Value) -> bool {
                match self {
                    $(Self::$variant => <$ty as Architecture>::detects(config)),*
                }
            }

            pub fn preprocessing(self, folder: &ModelFolder) -> Result<Preprocessing, ModelError> {
                match self {
                    $(Self::$variant => <$ty as Architecture>::preprocessing(folder)),*
                }
            }

            fn naming(self, folder: &ModelFolder) -> Result<Naming, ModelError> {
                match self {
                    $(Self::$variant => <$ty as Architecture>::naming(folder)),*
                }
            }

            /// What a bare weights file holds, if a registered architecture recognises it.
            pub fn recognise(index: &WeightsIndex) -> Option<String> {
                None$(.or_else(|| <$ty as Architecture>::recognise(index)))*
            }

            pub fn native_head(self, folder: &ModelFolder) -> Result<Option<NativeHead>, ModelError> {
                match self {
                    $(Self::$variant => <$ty as Architecture>::native_head(folder)),*
                }
            }

            fn load(
                self,
                folder: &ModelFolder,
                classifier: bool,
                device: &Device,
            ) -> Result<Network, ModelError> {
                match self {
                    $(Self::$variant => {
                        <$ty as Architecture>::load(folder, classifier, device).map(Network::$variant)
                    }),*
                }
            }
        }

        impl Network {
            pub fn architecture(&self) -> &dyn Architecture {
                match self {
                    $(Self::$variant(network) => network),*
                }
            }

            /// The variant segment burn's visitors put in module paths.
            fn is_variant(segment: &str) -> bool {
                matches!(segment, $(stringify!($variant))|*)
            }
        }
    };
}

registry! {
    Bert => crate::bert::Bert,
    Roberta => crate::roberta::Roberta,
    DistilBert => crate::distilbert::DistilBert,
    Electra => crate::electra::Electra,
    Mpnet => crate::mpnet::Mpnet,
    ModernBert => crate::modernbert::ModernBert,
    DebertaV2 => crate::deberta::Deberta,
    EfficientNet => crate::efficientnet::EfficientNet,
    ResNet => crate::resnet::ResNet,
    Vit => crate::vit::Vit,
    ConvNext => crate::convnext::ConvNext,
    MobileNetV3 => crate::mobilenetv3::MobileNetV3,
    EfficientNetB => crate::efficientnet_b::EfficientNetB,
}

impl ArchitectureId {
    /// The registered architecture that reads this `config.json`.
    pub fn detect(config: &Value) -> Option<Self> {
        Self::ALL.iter().copied().find(|id| id.detects(config))
    }

    /// The names `detect` knows, for error messages.
    pub fn names() -> String {
        Self::ALL
            .iter()
            .map(|id| id.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `module` with its float tensors cast to `dtype` (a half-precision copy, say). Where the module
/// records gradients the casts are recorded too, so gradients reach the original tensors.
pub fn cast_floats<M: Module>(module: &M, dtype: FloatDType) -> M {
    struct Cast(FloatDType);
    impl ModuleMapper for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let dtype = self.0;
            param.map(|tensor| tensor.cast(dtype))
        }
    }
    module.clone().map(&mut Cast(dtype))
}

/// A loaded backbone: an architecture's network and how its outputs become features.
#[derive(Module, Debug)]
pub struct Backbone {
    pub network: Network,
    #[module(skip)]
    pub pooling: PoolingOptions,
    /// The names of the folder it was loaded from, used again when it is saved.
    #[module(skip)]
    pub naming: Naming,
    /// Dropout on the inputs of LoRA-adapted layers while training (PEFT's `lora_dropout`).
    #[module(skip)]
    pub lora_dropout: f64,
    /// Compute the family's embedding (`embed`) rather than the features a head reads.
    #[module(skip)]
    pub embedding: bool,
}

impl Backbone {
    /// Loads the backbone of `folder`. `classifier`: keep the checkpoint's own classifier.
    pub fn load(
        folder: &ModelFolder,
        pooling: PoolingOptions,
        classifier: bool,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let network = folder.architecture.load(folder, classifier, device)?;
        let naming = folder.architecture.naming(folder)?;
        Ok(Self {
            network,
            pooling,
            naming,
            lora_dropout: 0.0,
            embedding: false,
        })
    }

    pub fn architecture(&self) -> &dyn Architecture {
        self.network.architecture()
    }

    /// Features `[batch, feature_size]`, L2-normalized when the pooling options say so.
    pub fn forward(&self, inputs: Inputs) -> Tensor<2> {
        // Images arrive in f32; a backbone cast to half precision reads them in its own type.
        let inputs = match inputs {
            Inputs::Image(images) => Inputs::Image(images.cast(self.float_dtype())),
            text => text,
        };
        let features = crate::adapters::with_dropout(self.lora_dropout, || {
            if self.embedding {
                self.architecture().forward_embedding(inputs, self.pooling)
            } else {
                self.architecture().forward_features(inputs, self.pooling)
            }
        });
        if self.pooling.normalize {
            l2_normalize(features)
        } else {
            features
        }
    }

    /// Per-token hidden states `[batch, seq, hidden]` of a text backbone (see
    /// [`Architecture::forward_tokens`]), never normalized: what a token-level head reads.
    pub fn forward_tokens(&self, inputs: Inputs) -> Option<Tensor<3>> {
        crate::adapters::with_dropout(self.lora_dropout, || {
            self.architecture().forward_tokens(inputs)
        })
    }

    /// The float type of the backbone's weights: f32, unless it was cast to half precision.
    pub fn float_dtype(&self) -> DType {
        struct First(Option<DType>);
        impl ModuleVisitor for First {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.get_or_insert_with(|| param.val().dtype());
            }
        }
        let mut first = First(None);
        self.visit(&mut first);
        first.0.unwrap_or(DType::F32)
    }

    pub fn feature_size(&self) -> usize {
        if self.embedding {
            self.architecture().embedding_size()
        } else {
            self.architecture().feature_size()
        }
    }

    /// The name a parameter path (inside the architecture's module) has in the folder's files.
    pub fn file_name(&self, path: &str) -> String {
        match self.naming {
            Naming::Upstream => self.architecture().upstream_name(path),
            Naming::Export(format) => self.architecture().export_name(format, path),
        }
    }

    /// The path inside the architecture's module of a path inside this backbone (`network.` and
    /// the variant removed), or `None` for a path outside the network.
    pub fn inner_path(path: &str) -> Option<&str> {
        let rest = path.strip_prefix("network.")?;
        match rest.split_once('.') {
            Some((first, inner)) if Network::is_variant(first) => Some(inner),
            _ => Some(rest),
        }
    }
}
