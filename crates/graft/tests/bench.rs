//! `graft bench forward`: graft's own measurement, and `--compare`, which runs the shipped
//! reference script with a given Python and reports the three runtimes side by side. A stand-in
//! "Python" (a shell script answering as the reference script would) checks the plumbing without
//! any Python ML package.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{fails, ok, write};

const FORWARD: [&str; 14] = [
    "bench",
    "forward",
    "--model",
    "models/all-MiniLM-L6-v2",
    "--data",
    "datasets/fine-foods/training_data.csv",
    "--column",
    "review",
    "--batch",
    "2",
    "--seq-len",
    "16",
    "--repeats",
    "1",
];

#[test]
fn forward_reports_graft_and_compares_with_the_references() {
    let own: serde_json::Value = serde_json::from_str(ok(&FORWARD).trim()).unwrap();
    assert_eq!(own["batch"], 2);
    assert_eq!(own["seq_len"], 16);
    assert!(own["sequences_per_second"].as_f64().unwrap() > 0.0);

    let dir = tempfile::tempdir().unwrap();
    // Answers like reference_forward.py: 4 sequences/s on PyTorch, 8 on ONNX Runtime, and
    // records the arguments it was given.
    let log = dir.path().join("args.txt");
    let python = write(
        dir.path(),
        "python",
        &format!(
            "#!/bin/sh\necho \"$@\" >> {}\ncase \"$2\" in\n  torch) echo '{{\"runtime\": \"pytorch\", \"sequences_per_second\": 4.0}}' ;;\n  *) echo 'noise'; echo '{{\"runtime\": \"onnxruntime\", \"sequences_per_second\": 8.0}}' ;;\nesac\n",
            log.display()
        ),
    );
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let python = python.to_str().unwrap();
    let mut args = FORWARD.to_vec();
    args.extend(["--compare", python]);
    let report: serde_json::Value = serde_json::from_str(ok(&args).trim()).unwrap();
    let graft = report["graft"]["sequences_per_second"].as_f64().unwrap();
    let ratio = |key: &str| report[key].as_f64().unwrap();
    assert!((ratio("graft_over_pytorch") - graft / 4.0).abs() < 1e-9 * graft);
    assert!((ratio("graft_over_onnxruntime") - graft / 8.0).abs() < 1e-9 * graft);
    assert_eq!(report["pytorch"]["runtime"], "pytorch");
    // Both references got the same batch, length, column and thread count as graft.
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(calls.lines().count(), 2, "{calls}");
    for (line, runtime) in calls.lines().zip(["torch", "onnxruntime"]) {
        assert!(
            line.contains(&format!("reference_forward.py {runtime} ")),
            "{line}"
        );
        for expected in [
            "--batch 2",
            "--seq-len 16",
            "--column review",
            "--repeats 1",
            "--threads ",
        ] {
            assert!(line.contains(expected), "{line} lacks {expected}");
        }
    }
}

#[test]
fn a_reference_that_cannot_run_is_a_clear_error() {
    let mut args = FORWARD.to_vec();
    args.extend(["--compare", "/nonexistent/python"]);
    let stderr = fails(&args);
    assert!(stderr.contains("/nonexistent/python"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let python = write(
        dir.path(),
        "python",
        "#!/bin/sh\necho 'ModuleNotFoundError' >&2\nexit 1\n",
    );
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut args = FORWARD.to_vec();
    args.extend(["--compare", python.to_str().unwrap()]);
    let stderr = fails(&args);
    assert!(stderr.contains("the torch reference failed"), "{stderr}");
}
