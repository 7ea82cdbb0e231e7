//! Faults during training, through the `graft` binary: SIGINT and SIGTERM stop a run cleanly
//! (exit 130 and 143, the last complete checkpoint kept, `--resume` ends as an uninterrupted run);
//! a loss that becomes NaN or infinite stops the run naming the epoch and step and saves
//! nothing; non-finite features name the example; two runs share a feature cache at once and a
//! second run into a folder in use is refused naming the process; a full disk (a small tmpfs,
//! when the tests run as root) gives a clear error, leaves no partial file under a final name
//! and keeps the checkpoints and the cache readable.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    FINE_FOODS_MINI, command, fails, json, latest_checkpoint, metrics_without_seconds, ok, repo,
    write,
};

/// A run that fine-tunes the top of MiniLM (each epoch takes a while), as the SIGKILL test.
fn finetune_config(out_dir: &Path, epochs: usize) -> String {
    format!(
        r#"[model]
backbone = "models/all-MiniLM-L6-v2"
max_length = 64

{FINE_FOODS_MINI}
[freeze]
layers = 5

[train]
epochs = {epochs}
batch_size = 8
lr = 1e-3
backend = "flex"

[output]
dir = "{}"
"#,
        out_dir.display()
    )
}

/// A head on frozen MiniLM features, with the features cached in `cache`.
fn frozen_config(out_dir: &Path, cache: &Path, epochs: usize) -> String {
    format!(
        r#"[model]
backbone = "models/all-MiniLM-L6-v2"

{FINE_FOODS_MINI}
[freeze]
backbone = true

[train]
epochs = {epochs}
batch_size = 8
lr = 1e-3
backend = "flex"
cache_dir = "{}"

[output]
dir = "{}"
"#,
        cache.display(),
        out_dir.display()
    )
}

fn spawn(args: &[&str]) -> Child {
    command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `ready` holds, failing if `child` ends first or after 300 s.
fn wait_for(child: &mut Child, what: &str, ready: impl Fn() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before {what}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no {what} after 300 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn stderr_of(child: Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn sigint_and_sigterm_stop_cleanly_and_resume_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let cfg = write(tmp.path(), "a.toml", &finetune_config(&reference, 3));
    ok(&["train", cfg.to_str().unwrap()]);

    for (name, status) in [("INT", 130), ("TERM", 143)] {
        let run = tmp.path().join(name);
        let cfg = write(tmp.path(), "b.toml", &finetune_config(&run, 3));
        let mut child = spawn(&["train", cfg.to_str().unwrap()]);
        wait_for(&mut child, "its first checkpoint", || {
            latest_checkpoint(&run).is_some()
        });
        std::thread::sleep(Duration::from_millis(300));
        signal(&child, name);
        let (code, stderr) = stderr_of(child);
        assert_eq!(code, Some(status), "{stderr}");
        let kept = latest_checkpoint(&run).unwrap();
        assert_ne!(
            kept, "epoch-0003",
            "the signal came too late to test anything"
        );
        let epoch = kept.trim_start_matches("epoch-").parse::<usize>().unwrap();
        assert!(
            stderr.contains(&format!("SIG{name} received: stopping"))
                && stderr.contains(&format!("stopped by SIG{name}"))
                && stderr.contains(&format!("the checkpoint of epoch {epoch} is kept"))
                && stderr.contains("--resume")
                && !stderr.contains("panicked"),
            "{stderr}"
        );
        assert!(!run.join("graft.json").exists());
        assert!(
            !run.join(".graft.lock").exists()
                || std::fs::File::open(run.join(".graft.lock"))
                    .unwrap()
                    .try_lock()
                    .is_ok()
        );
        if name == "INT" {
            let said = ok(&["train", cfg.to_str().unwrap(), "--resume"]);
            assert!(said.contains("best epoch"), "{said}");
            assert_eq!(
                metrics_without_seconds(&reference),
                metrics_without_seconds(&run)
            );
            assert_eq!(
                json(&reference.join("eval.json")),
                json(&run.join("eval.json"))
            );
        }
    }
}

#[test]
fn a_loss_that_becomes_nan_or_infinite_stops_the_run_and_saves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // Regression targets whose squares overflow f32: the first step's loss is infinite.
    let mut data = String::from("text,value\n");
    for i in 0..20 {
        data += &format!("text number {i},{}e30\n", i + 1);
    }
    write(tmp.path(), "huge.csv", &data);
    let run = tmp.path().join("run");
    let cfg = write(
        tmp.path(),
        "c.toml",
        &format!(
            "[model]\nbackbone = \"models/all-MiniLM-L6-v2\"\n[data]\nformat = \"csv\"\n\
             train = \"{}\"\ntext_column = \"text\"\nlabel_column = \"value\"\ntask = \"regression\"\n\
             standardize = false\n[train]\nepochs = 3\nbatch_size = 4\ncache_dir = \"{}\"\n\
             [output]\ndir = \"{}\"\n",
            tmp.path().join("huge.csv").display(),
            tmp.path().join("cache").display(),
            run.display()
        ),
    );
    let stderr = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        stderr.contains("the training loss became infinite at epoch 1, step 1")
            && stderr.contains("lower [train] lr"),
        "{stderr}"
    );
    for file in ["graft.json", "model.safetensors", "checkpoints/latest"] {
        assert!(!run.join(file).exists(), "{file} was saved");
    }

    // A learning rate far too high: the loss blows up in a later step, which is named.
    let cfg = write(
        tmp.path(),
        "d.toml",
        &frozen_config(&run, &tmp.path().join("cache"), 5)
            .replace("lr = 1e-3", "lr = 1e30\noptimizer = \"sgd\""),
    );
    let stderr = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        stderr.contains("the training loss became") && stderr.contains(", step "),
        "{stderr}"
    );
    assert!(!run.join("graft.json").exists());
}

#[test]
fn non_finite_features_name_the_example() {
    let tmp = tempfile::tempdir().unwrap();
    // A RoBERTa folder whose embedding LayerNorm weight is NaN: every feature is NaN.
    let source = repo().join("crates/graft-model/tests/golden/text_families/roberta");
    let folder = tmp.path().join("roberta");
    std::fs::create_dir(&folder).unwrap();
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(source.join(name), folder.join(name)).unwrap();
    }
    let bytes = std::fs::read(source.join("model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = Vec::new();
    for (name, view) in tensors.tensors() {
        let mut data = view.data().to_vec();
        if name.ends_with("embeddings.LayerNorm.weight") {
            assert_eq!(view.dtype(), safetensors::Dtype::F32);
            data = f32::NAN.to_le_bytes().repeat(data.len() / 4);
        }
        owned.push((name, view.shape().to_vec(), data, view.dtype()));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, s, d, t)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*t, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &folder.join("model.safetensors")).unwrap();
    let cfg = write(
        tmp.path(),
        "c.toml",
        &frozen_config(&tmp.path().join("run"), &tmp.path().join("cache"), 1)
            .replace("models/all-MiniLM-L6-v2", folder.to_str().unwrap()),
    );
    let stderr = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        stderr.contains("datasets/fine-foods-mini/train.csv:")
            && stderr.contains("NaN or infinite"),
        "{stderr}"
    );
}

#[test]
fn concurrent_runs_share_a_cache_and_a_folder_in_use_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let cfg_a = write(tmp.path(), "a.toml", &frozen_config(&a, &cache, 3));
    let cfg_b = write(tmp.path(), "b.toml", &frozen_config(&b, &cache, 3));
    // Both compute the same features into one cache at the same time.
    let first = spawn(&["train", cfg_a.to_str().unwrap()]);
    let second = spawn(&["train", cfg_b.to_str().unwrap()]);
    for child in [first, second] {
        let (code, stderr) = stderr_of(child);
        assert_eq!(code, Some(0), "{stderr}");
    }
    assert_eq!(metrics_without_seconds(&a), metrics_without_seconds(&b));
    assert_eq!(json(&a.join("eval.json")), json(&b.join("eval.json")));
    // A third run reads every feature from the cache, and agrees.
    let c = tmp.path().join("c");
    let cfg_c = write(tmp.path(), "c.toml", &frozen_config(&c, &cache, 3));
    let out = command(&["train", cfg_c.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("features: 0 computed"), "{stderr}");
    assert_eq!(metrics_without_seconds(&a), metrics_without_seconds(&c));

    // A long run holds its folder; a second run into it is refused, naming the first.
    let long = write(tmp.path(), "long.toml", &finetune_config(&a, 50));
    let mut holder = spawn(&["train", long.to_str().unwrap(), "--force"]);
    let pid = holder.id().to_string();
    wait_for(&mut holder, "its lock", || {
        std::fs::read_to_string(a.join(".graft.lock")).is_ok_and(|t| t.trim() == pid)
    });
    let stderr = fails(&["train", cfg_a.to_str().unwrap()]);
    assert!(
        stderr.contains("in use by another graft run") && stderr.contains(&format!("pid {pid}")),
        "{stderr}"
    );
    // Killed, it leaves nothing stuck, and the run it was replacing as it was.
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(metrics_without_seconds(&a), metrics_without_seconds(&b));
    assert_eq!(json(&a.join("eval.json")), json(&b.join("eval.json")));
    let said = ok(&["train", cfg_a.to_str().unwrap(), "--force"]);
    assert!(said.contains("best epoch"), "{said}");
    assert!(!tmp.path().join(".a.graft-new").exists());
}

/// A tmpfs of `size` at a fresh folder, unmounted when dropped; `None` where mounting is not
/// allowed (not root).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(Self { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Names in `dir` (recursively) that look like an interrupted write.
fn partial_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            found.extend(partial_files(&path));
        } else if name.starts_with(".tmp") || name.ends_with(".partial") {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn a_full_disk_is_a_clear_error_that_loses_nothing() {
    let Some(disk) = Tmpfs::mount("2m") else {
        if std::env::var("GRAFT_CI").as_deref() == Ok("1") {
            panic!("CI runs as root and must be able to mount a tmpfs");
        }
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // The features (tiny) and the head's checkpoints fit; the 90 MB model does not.
    let run = disk.path().join("run");
    let cache = disk.path().join("cache");
    let cfg = write(tmp.path(), "a.toml", &frozen_config(&run, &cache, 2));
    let stderr = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        stderr.contains("model.safetensors") && stderr.contains("No space left on device"),
        "{stderr}"
    );
    assert!(!run.join("model.safetensors").exists());
    assert_eq!(partial_files(&disk.path()), Vec::<String>::new());
    assert_eq!(latest_checkpoint(&run).as_deref(), Some("epoch-0002"));
    // The run moved to a disk with room finishes from its checkpoint, reading the cache.
    let moved = tmp.path().join("moved");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&run)
        .arg(&moved)
        .status()
        .unwrap();
    assert!(status.success());
    let cfg = write(tmp.path(), "b.toml", &frozen_config(&moved, &cache, 2));
    let out = command(&["train", cfg.to_str().unwrap(), "--resume", "--force"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("features: 0 computed"),
        "{stderr}"
    );
    assert!(moved.join("graft.json").is_file());

    // A feature shard that does not fit: the error names it and no shard is left half-written.
    let small = Tmpfs::mount("16k").unwrap();
    let cfg = write(
        tmp.path(),
        "c.toml",
        &frozen_config(&tmp.path().join("run2"), &small.path(), 1),
    );
    let stderr = fails(&["train", cfg.to_str().unwrap()]);
    assert!(
        stderr.contains("shard-") && stderr.contains("No space left on device"),
        "{stderr}"
    );
    assert_eq!(partial_files(&small.path()), Vec::<String>::new());
}
