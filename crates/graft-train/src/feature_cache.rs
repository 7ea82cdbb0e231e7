//! The frozen-feature cache: a frozen backbone computes the same features for the same text every
//! epoch and every run, so they are computed once and stored on disk as safetensors shards.
//!
//! The key of a set of examples hashes everything that changes its features: the backbone's
//! weights and config, the files its preprocessing reads (`tokenizer.json`), the pooling and the
//! encoding settings (max length, image transform), and the examples' content as the modality
//! encodes it (token ids, image file bytes), so any change to the inputs gives a new key while
//! label-only changes reuse it. Text and images share it. Each shard is written atomically and
//! checked when read, so an interrupted pass resumes from the shards already finished. It lives
//! in graft-train rather than graft-data because filling it needs the backbone.

use std::io::Read;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use graft_model::Backbone;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::classifier::extract_features;
use crate::error::TrainError;
use crate::files::{TensorBytes, write_safetensors};
use crate::modality::Encoded;
use crate::progress::Progress;

/// Texts per shard: the unit of resumption.
pub const SHARD_SIZE: usize = 512;
/// Bumped whenever the stored layout or the feature computation changes.
const FORMAT_VERSION: &str = "graft-features-v2";

/// The default cache folder: `$GRAFT_CACHE_DIR`, else `$XDG_CACHE_HOME/graft`, else
/// `~/.cache/graft`, else `.cache/graft` in the current folder.
pub fn default_root() -> PathBuf {
    graft_model::shards::cache_root()
}

/// How many examples a lookup computed and how many it read back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    pub computed: usize,
    pub reused: usize,
}

impl std::ops::AddAssign for CacheStats {
    fn add_assign(&mut self, other: Self) {
        self.computed += other.computed;
        self.reused += other.reused;
    }
}

/// Features of one frozen backbone, stored under `root/features/<key>/`.
pub struct FeatureCache {
    root: PathBuf,
    model_key: String,
    rebuild: bool,
}

fn hash_file(hasher: &mut Sha256, path: &Path) -> Result<(), TrainError> {
    let io = |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    hasher.update(b"\0");
    Ok(())
}

fn hex(digest: impl AsRef<[u8]>) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl FeatureCache {
    /// A cache for the backbone whose weights, config and preprocessing files are `files`, used
    /// with `settings` (pooling and encoding, as text). `rebuild` recomputes (and overwrites)
    /// every entry it is asked for.
    pub fn new(
        root: &Path,
        files: &[PathBuf],
        settings: &str,
        rebuild: bool,
    ) -> Result<Self, TrainError> {
        let mut hasher = Sha256::new();
        hasher.update(FORMAT_VERSION);
        for path in files {
            hash_file(&mut hasher, path)?;
        }
        hasher.update(settings);
        Ok(Self {
            root: root.join("features"),
            model_key: hex(hasher.finalize()),
            rebuild,
        })
    }

    /// The folder under which the entries live.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The folder holding the features of `data`.
    pub fn entry(&self, data: &Encoded) -> PathBuf {
        let mut hasher = Sha256::new();
        hasher.update(&self.model_key);
        hasher.update((data.len() as u64).to_le_bytes());
        for i in 0..data.len() {
            data.hash_example(i, &mut hasher);
        }
        self.root.join(hex(hasher.finalize()))
    }

    /// Features `[n, width]` of every example of `data`, in order, from the cache where present
    /// and computed (and stored) otherwise.
    pub fn features(
        &self,
        backbone: &Backbone,
        data: &Encoded,
        batch_size: usize,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<(Tensor<2>, CacheStats), TrainError> {
        let dir = self.entry(data);
        let n = data.len();
        let width = backbone.feature_size();
        let shards = n.div_ceil(SHARD_SIZE);
        if self.rebuild && dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|source| TrainError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        let mut stats = CacheStats::default();
        let mut parts = Vec::with_capacity(shards);
        for shard in 0..shards {
            if let Some(signal) = progress.interrupted() {
                return Err(TrainError::Interrupted {
                    signal,
                    resumable: false,
                    kept: format!(
                        "; {shard} finished shards of features are cached for the next run"
                    ),
                });
            }
            let start = shard * SHARD_SIZE;
            let end = (start + SHARD_SIZE).min(n);
            let path = dir.join(format!("shard-{shard:05}.safetensors"));
            match read_shard(&path, end - start, width) {
                Some(values) => {
                    stats.reused += end - start;
                    progress.advance(end - start);
                    parts.push(Tensor::<2>::from_data(
                        TensorData::new(values, [end - start, width]),
                        device,
                    ));
                }
                None => {
                    let indices: Vec<usize> = (start..end).collect();
                    let features = extract_features(
                        backbone,
                        data,
                        Some(&indices),
                        batch_size,
                        device,
                        progress,
                    );
                    write_shard(&path, &features)?;
                    stats.computed += end - start;
                    parts.push(features);
                }
            }
        }
        if parts.is_empty() {
            return Ok((Tensor::zeros([0, width], device), stats));
        }
        Ok((Tensor::cat(parts, 0), stats))
    }
}

/// The shard's values if it is there, readable and of the expected shape.
fn read_shard(path: &Path, rows: usize, hidden: usize) -> Option<Vec<f32>> {
    let tensor = graft_model::weights::read_tensors(path)
        .ok()?
        .into_iter()
        .find(|t| t.name == "features")?;
    if tensor.shape != [rows, hidden] || tensor.dtype != safetensors::Dtype::F32 {
        return None;
    }
    Some(
        tensor
            .bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

fn write_shard(path: &Path, features: &Tensor<2>) -> Result<(), TrainError> {
    let [rows, width] = features.dims();
    let values: Vec<f32> = features
        .clone()
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| TrainError::Write {
            path: path.to_path_buf(),
            message: format!("{e:?}"),
        })?;
    let tensor = TensorBytes::f32("features", vec![rows, width], &values);
    write_safetensors(path, &[tensor], None)
}
