//! The feature pass sharded over workers: three `graft features --shard I/3` processes at once
//! into one cache, then `graft train` on it gives the unsharded run's metrics and weights bit for
//! bit without running the backbone; a worker killed mid-way and run again computes only what it
//! had not stored; a corrupt shard is an error naming its file (or computed again when asked).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{command, fails, metrics_without_seconds, ok, write};

fn config(dir: &Path, name: &str, cache: &Path) -> PathBuf {
    let text = format!(
        r#"[model]
backbone = "models/all-MiniLM-L6-v2"
max_length = 32

[data]
format = "csv"
train = "datasets/fine-foods/training_data.csv"
test = "datasets/fine-foods/testing_data.csv"
text_column = "review"
label_column = "score"

[train]
epochs = 2
backend = "flex"
checkpoints = false
cache_dir = "{}"

[output]
dir = "{}"
"#,
        cache.display(),
        dir.join(name).display()
    );
    write(dir, &format!("{name}.toml"), &text)
}

/// The files of the cache's entries, under `cache/features/<entry>/`.
fn shard_files(cache: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(cache.join("features")) else {
        return files;
    };
    for entry in entries.flatten() {
        for file in std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            files.push(file.path());
        }
    }
    files.sort();
    files
}

/// "shard I/N: C features computed, R already cached, ..." → (C, R).
fn counts(said: &str) -> (usize, usize) {
    let words: Vec<&str> = said.split_whitespace().collect();
    let at = |word: &str| {
        let i = words.iter().position(|w| w.starts_with(word)).unwrap();
        words[i - 1].parse::<usize>().unwrap()
    };
    (at("features"), at("already"))
}

#[test]
fn sharded_features_train_the_unsharded_head_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // The unsharded run.
    let plain = config(dir, "plain", &dir.join("cache-plain"));
    ok(&["train", plain.to_str().unwrap()]);

    // Three workers at once into one cache, then the head job.
    let cache = dir.join("cache-sharded");
    let sharded = config(dir, "sharded", &cache);
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let shard = format!("{i}/3");
            command(&["features", sharded.to_str().unwrap(), "--shard", &shard])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        let out = worker.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        total += counts(&said).0;
    }
    // Train 3600 + valid 400 + test 1000 texts, each computed by exactly one worker.
    assert_eq!(total, 5000);
    let trained = command(&["train", sharded.to_str().unwrap()])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&trained.stderr);
    assert!(trained.status.success(), "{log}");
    assert!(log.contains("features: 0 computed, 5000 read"), "{log}");
    assert_eq!(
        metrics_without_seconds(&dir.join("sharded")),
        metrics_without_seconds(&dir.join("plain"))
    );
    let weights = |run: &str| std::fs::read(dir.join(run).join("model.safetensors")).unwrap();
    assert!(weights("sharded") == weights("plain"), "weights differ");

    // A corrupt shard: the head job names it, and computes it again only when asked.
    let victim = shard_files(&cache)
        .into_iter()
        .find(|f| f.to_string_lossy().ends_with("shard-00001.safetensors"))
        .unwrap();
    std::fs::write(&victim, b"not a safetensors file").unwrap();
    let again = config(dir, "again", &cache);
    let error = fails(&["train", again.to_str().unwrap()]);
    assert!(error.contains(&victim.display().to_string()), "{error}");
    ok(&["train", again.to_str().unwrap(), "--compute-missing"]);

    // A worker killed once it stored its first shard computes only the rest when run again.
    let cache = dir.join("cache-killed");
    let killed = config(dir, "killed", &cache);
    let mut worker = command(&["features", killed.to_str().unwrap(), "--shard", "0/1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !shard_files(&cache)
        .iter()
        .any(|f| f.to_string_lossy().ends_with(".safetensors"))
    {
        assert!(Instant::now() < deadline, "no shard was stored");
        assert!(
            worker.try_wait().unwrap().is_none(),
            "the worker ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.kill().unwrap();
    worker.wait().unwrap();
    // Nothing half-written: every shard file there is whole.
    for file in shard_files(&cache) {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("shard-") {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                safetensors::SafeTensors::deserialize(&bytes).is_ok(),
                "{name} is not whole"
            );
        }
    }
    let said = ok(&["features", killed.to_str().unwrap(), "--shard", "0/1"]);
    let (computed, reused) = counts(&said);
    assert_eq!(computed + reused, 5000, "{said}");
    assert!(reused > 0 && computed < 5000, "{said}");
}

#[test]
fn shard_specs_read_the_schedulers_variables() {
    use graft_train::Shard;
    let none = |_: &str| None;
    assert_eq!(
        Shard::parse("2/3", none).unwrap(),
        Shard { index: 2, count: 3 }
    );
    assert!(
        Shard::parse("3/3", none)
            .unwrap_err()
            .contains("below the count")
    );
    assert!(
        Shard::parse("auto", none)
            .unwrap_err()
            .contains("SLURM_ARRAY_TASK_ID")
    );
    let slurm = |name: &str| match name {
        "SLURM_ARRAY_TASK_ID" => Some("5".to_string()),
        "SLURM_ARRAY_TASK_MIN" => Some("4".to_string()),
        "SLURM_ARRAY_TASK_COUNT" => Some("4".to_string()),
        _ => None,
    };
    assert_eq!(
        Shard::parse("auto", slurm).unwrap(),
        Shard { index: 1, count: 4 }
    );
    let kubernetes = |name: &str| (name == "JOB_COMPLETION_INDEX").then(|| "2".to_string());
    assert_eq!(
        Shard::parse("auto/3", kubernetes).unwrap(),
        Shard { index: 2, count: 3 }
    );
}

/// The ready examples parse: the Kubernetes Jobs as YAML, with as many completions as the
/// workers' `auto/N` says, and the Slurm script as shell.
#[test]
fn the_cluster_examples_parse() {
    let dir = common::repo().join("examples/cluster");
    let load = |name: &str| {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let mut docs =
            yaml_rust2::YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(docs.len(), 1, "{name}");
        docs.remove(0)
    };
    let features = load("features-job.yaml");
    assert_eq!(features["kind"].as_str(), Some("Job"));
    let spec = &features["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let container = &spec["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "features");
    let shard = args[args.iter().position(|a| *a == "--shard").unwrap() + 1];
    let workers = shard.strip_prefix("auto/").unwrap().parse::<i64>().unwrap();
    assert_eq!(spec["completions"].as_i64(), Some(workers));
    let head = load("head-job.yaml");
    assert_eq!(
        head["spec"]["template"]["spec"]["containers"][0]["args"][0].as_str(),
        Some("train")
    );
    let checked = std::process::Command::new("bash")
        .args(["-n", dir.join("slurm.sh").to_str().unwrap()])
        .status()
        .unwrap();
    assert!(checked.success(), "slurm.sh does not parse");
    let slurm = std::fs::read_to_string(dir.join("slurm.sh")).unwrap();
    assert!(slurm.contains("graft features \"$config\" --shard auto"));
}

/// `graft embed --shard I/N`: two workers at once each write their slice and the manifest; the
/// slices stitched in the manifest's order are the unsharded embeddings.
#[test]
fn sharded_embeddings_stitch_to_the_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let texts: Vec<String> = (0..11)
        .map(|i| format!("review number {i}: tasty"))
        .collect();
    let input = write(tmp.path(), "texts.txt", &texts.join("\n"));
    let whole = tmp.path().join("whole.safetensors");
    let args = |output: &Path| {
        vec![
            "embed".to_string(),
            "--model".into(),
            "models/all-MiniLM-L6-v2".into(),
            "--input".into(),
            input.display().to_string(),
            "--output".into(),
            output.display().to_string(),
            "--backend".into(),
            "flex".into(),
        ]
    };
    let whole_args = args(&whole);
    ok(&whole_args.iter().map(String::as_str).collect::<Vec<_>>());
    let sharded = tmp.path().join("sharded");
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let mut a = args(&sharded);
            a.extend(["--shard".into(), format!("{i}/2")]);
            command(&a.iter().map(String::as_str).collect::<Vec<_>>())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for worker in workers {
        let out = worker.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stitched = graft_train::EmbeddingShards::read(&sharded).unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let want: Vec<f32> = file
        .tensor("embeddings")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(stitched.len(), want.len());
    let worst = stitched
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-6, "{worst}");
    // A missing shard is named.
    std::fs::remove_file(sharded.join("embeddings-00001-of-00002.safetensors")).unwrap();
    let error = graft_train::EmbeddingShards::read(&sharded)
        .unwrap_err()
        .to_string();
    assert!(error.contains("embeddings-00001-of-00002"), "{error}");
}
