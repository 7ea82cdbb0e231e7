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
    /// Compute the shards a sharded pass left missing instead of refusing.
    compute_missing: bool,
}

/// The I-th of N workers of a sharded feature pass (`I/N`, 0-based): it computes the cache
/// shards whose number is I modulo N, so N workers fill every shard once, whatever the split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `I/N`; `auto` reads a Slurm array task (`SLURM_ARRAY_TASK_ID` less `SLURM_ARRAY_TASK_MIN`,
    /// of `SLURM_ARRAY_TASK_COUNT`); `auto/N` a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX`.
    /// `env` looks a variable up.
    pub fn parse(spec: &str, env: impl Fn(&str) -> Option<String>) -> Result<Shard, String> {
        let number = |name: &str| -> Result<usize, String> {
            let value = env(name).ok_or_else(|| format!("{spec}: {name} is not set"))?;
            value
                .trim()
                .parse()
                .map_err(|_| format!("{spec}: {name} is {value:?}, not a number"))
        };
        let (index, count) = match spec.split_once('/') {
            None if spec == "auto" => {
                let min = env("SLURM_ARRAY_TASK_MIN")
                    .map_or(Ok(0), |_| number("SLURM_ARRAY_TASK_MIN"))?;
                let id = number("SLURM_ARRAY_TASK_ID")?;
                let index = id.checked_sub(min).ok_or_else(|| {
                    format!("auto: SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}")
                })?;
                (index, number("SLURM_ARRAY_TASK_COUNT")?)
            }
            Some(("auto", count)) => (
                number("JOB_COMPLETION_INDEX")?,
                count
                    .parse()
                    .map_err(|_| format!("{spec}: {count:?} is not a count"))?,
            ),
            Some((index, count)) => (
                index
                    .parse()
                    .map_err(|_| format!("{spec}: {index:?} is not an index"))?,
                count
                    .parse()
                    .map_err(|_| format!("{spec}: {count:?} is not a count"))?,
            ),
            None => return Err(format!("{spec}: expected I/N, auto or auto/N")),
        };
        if count == 0 || index >= count {
            return Err(format!(
                "{spec}: the index must be below the count (0-based: 0/{count} to {}/{count})",
                count.max(1) - 1
            ));
        }
        Ok(Shard { index, count })
    }

    fn takes(&self, cache_shard: usize) -> bool {
        cache_shard % self.count == self.index
    }
}

/// Written into an entry's folder by a sharded pass: the head job then refuses a cache with
/// shards missing, naming them, instead of computing them where it runs.
const SHARDED_MARKER: &str = "sharded.json";

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
            compute_missing: false,
        })
    }

    /// With `true`, a sharded entry's missing shards are computed where the lookup runs.
    pub fn compute_missing(mut self, compute: bool) -> Self {
        self.compute_missing = compute;
        self
    }

    /// Computes and stores `shard`'s share of `data`'s cache shards (those already stored and
    /// readable are kept), holding one cache shard's features at a time, and marks the entry as
    /// filled by a sharded pass.
    pub fn fill(
        &self,
        backbone: &Backbone,
        data: &Encoded,
        batch_size: usize,
        device: &Device,
        progress: &dyn Progress,
        shard: Shard,
    ) -> Result<CacheStats, TrainError> {
        let dir = self.entry(data);
        let n = data.len();
        let width = backbone.feature_size();
        let shards = n.div_ceil(SHARD_SIZE);
        std::fs::create_dir_all(&dir).map_err(TrainError::io(&dir))?;
        let marker = serde_json::json!({"rows": n, "shards": shards, "format": FORMAT_VERSION});
        crate::files::write_atomic(&dir.join(SHARDED_MARKER), marker.to_string().as_bytes())?;
        let mut stats = CacheStats::default();
        for cache_shard in (0..shards).filter(|&k| shard.takes(k)) {
            if let Some(signal) = progress.interrupted() {
                return Err(TrainError::Interrupted {
                    signal,
                    resumable: false,
                    kept: "; the finished shards are cached for the next run".into(),
                });
            }
            let start = cache_shard * SHARD_SIZE;
            let end = (start + SHARD_SIZE).min(n);
            let path = dir.join(shard_file(cache_shard));
            if !self.rebuild && read_shard(&path, end - start, width).is_some() {
                stats.reused += end - start;
                progress.advance(end - start);
                continue;
            }
            let indices: Vec<usize> = (start..end).collect();
            let features =
                extract_features(backbone, data, Some(&indices), batch_size, device, progress);
            write_shard(&path, features)?;
            stats.computed += end - start;
        }
        Ok(stats)
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
        // Workers filled this entry: a shard they left missing is theirs to compute, not ours.
        let sharded = dir.join(SHARDED_MARKER).exists() && !self.compute_missing;
        let mut absent = Vec::new();
        let mut stats = CacheStats::default();
        // One buffer for every row, filled shard by shard: the features are held once.
        let mut all: Vec<f32> = Vec::with_capacity(n * width);
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
            let path = dir.join(shard_file(shard));
            match read_shard(&path, end - start, width) {
                Some(values) => {
                    stats.reused += end - start;
                    progress.advance(end - start);
                    all.extend_from_slice(&values);
                }
                None if sharded => absent.push(path.display().to_string()),
                None => {
                    if path.exists() {
                        progress.info(&format!(
                            "warning: {} is unreadable or of the wrong shape; computing it again",
                            path.display()
                        ));
                    }
                    let indices: Vec<usize> = (start..end).collect();
                    let features = extract_features(
                        backbone,
                        data,
                        Some(&indices),
                        batch_size,
                        device,
                        progress,
                    );
                    let values = write_shard(&path, features)?;
                    stats.computed += end - start;
                    all.extend_from_slice(&values);
                }
            }
        }
        if !absent.is_empty() {
            return Err(TrainError::ShardsMissing {
                files: absent,
                total: shards,
            });
        }
        let features = Tensor::<2>::from_data(TensorData::new(all, [n, width]), device);
        Ok((features, stats))
    }
}

/// The file of cache shard `k` in an entry's folder.
fn shard_file(k: usize) -> String {
    format!("shard-{k:05}.safetensors")
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

/// Writes a shard's features and gives back their values.
fn write_shard(path: &Path, features: Tensor<2>) -> Result<Vec<f32>, TrainError> {
    let [rows, width] = features.dims();
    let values: Vec<f32> =
        features
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| TrainError::Write {
                path: path.to_path_buf(),
                message: format!("{e:?}"),
            })?;
    let tensor = TensorBytes::f32("features", vec![rows, width], &values);
    write_safetensors(path, &[tensor], None)?;
    Ok(values)
}
