//! Parquet files written by pyarrow (`scripts/golden/make_parquet_fixtures.py`): every text and
//! label column type, every compression, datasets' `Image` and `ClassLabel` features, and the
//! nulls read as empty fields, and errors for missing columns and broken files.

use std::path::{Path, PathBuf};

use graft_data::image::decode_rgb;
use graft_data::targets::label_list;
use graft_data::{DataError, DataFormat, read_texts};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/parquet")
        .join(name)
}

const TEXTS: [&str; 6] = [
    "good tea",
    "bad coffee",
    "héllo wörld ☕",
    "fine",
    "so so",
    "great!",
];

#[test]
fn every_text_column_type_and_compression_reads_the_same_rows() {
    assert_eq!(
        DataFormat::from_extension(Path::new("a.parquet")),
        DataFormat::Parquet
    );
    for compression in ["snappy", "zstd", "gzip", "lz4", "none"] {
        let path = fixture(&format!("texts_{compression}.parquet"));
        for column in ["text", "text_large", "text_view", "text_dict"] {
            let examples = read_texts(&path, DataFormat::Parquet, column, Some("label")).unwrap();
            let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
            assert_eq!(texts, TEXTS, "{compression} {column}");
            let labels: Vec<&str> = examples
                .iter()
                .map(|e| e.label.as_deref().unwrap())
                .collect();
            assert_eq!(
                labels,
                ["great", "other", "great", "other", "other", "great"]
            );
            let lines: Vec<usize> = examples.iter().map(|e| e.line).collect();
            assert_eq!(lines, [1, 2, 3, 4, 5, 6], "rows count across row groups");
            assert!(examples.iter().all(|e| e.bytes.is_none()));
        }
    }
}

#[test]
fn label_columns_of_every_type() {
    let path = fixture("texts_snappy.parquet");
    let labels = |column: &str| -> Vec<String> {
        read_texts(&path, DataFormat::Parquet, "text", Some(column))
            .unwrap()
            .into_iter()
            .map(|e| e.label.unwrap())
            .collect()
    };
    assert_eq!(labels("label_dict")[1], "other");
    assert_eq!(labels("label_id"), ["1", "0", "1", "0", "0", "1"]);
    assert_eq!(labels("flag")[0], "true");
    assert_eq!(labels("score")[3], "3.25");
    let tags = labels("tags");
    assert_eq!(label_list(&tags[0], "|").unwrap(), ["tea", "hot"]);
    assert!(label_list(&tags[2], "|").unwrap().is_empty());
    let ids = labels("tag_ids");
    assert_eq!(label_list(&ids[4], "|").unwrap(), ["1", "2"]);
}

#[test]
fn datasets_images_and_class_labels() {
    let path = fixture("fashion_mnist_mini_train.parquet");
    let examples = read_texts(&path, DataFormat::Parquet, "image", Some("label")).unwrap();
    assert_eq!(examples.len(), 120);
    // ClassLabel ids are named from the file's `huggingface` metadata.
    assert_eq!(examples[0].label.as_deref(), Some("ankle-boot"));
    assert_eq!(examples[119].label.as_deref(), Some("trouser"));
    // The image bytes are the PNG file the row was made from.
    let first = std::fs::read_dir(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../datasets/fashion-mnist-mini/train/ankle-boot"),
    )
    .unwrap()
    .map(|e| e.unwrap().path())
    .min()
    .unwrap();
    let bytes = examples[0].bytes.as_deref().unwrap();
    assert_eq!(bytes, std::fs::read(&first).unwrap().as_slice());
    assert!(
        examples[0]
            .text
            .ends_with("fashion_mnist_mini_train.parquet#row1")
    );
    let image = decode_rgb(bytes, Path::new(&examples[0].text)).unwrap();
    assert_eq!(image.dimensions(), (28, 28));

    let binary = read_texts(
        &fixture("images_binary.parquet"),
        DataFormat::Parquet,
        "img",
        None,
    )
    .unwrap();
    assert_eq!(binary.len(), 3);
    assert!(
        binary
            .iter()
            .all(|e| e.bytes.is_some() && e.label.is_none())
    );
}

#[test]
fn nulls_missing_columns_and_broken_files_are_clear_errors() {
    // A null is read as an empty field (row 3 here); training and prediction refuse it, naming
    // the row (graft-train's bad-row screen).
    let examples = read_texts(
        &fixture("null_text.parquet"),
        DataFormat::Parquet,
        "text",
        Some("label"),
    )
    .unwrap();
    assert_eq!(examples[2].line, 3);
    assert_eq!(examples[2].text, "");
    assert!(
        examples
            .iter()
            .enumerate()
            .all(|(i, e)| i == 2 || !e.text.is_empty())
    );

    let error = read_texts(
        &fixture("texts_snappy.parquet"),
        DataFormat::Parquet,
        "review",
        None,
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, DataError::MissingColumn { .. }) && message.contains("text_large"),
        "{message}"
    );

    // A truncated file, and a CSV named .parquet.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("texts_snappy.parquet")).unwrap();
    for (name, content) in [
        ("cut.parquet", &bytes[..bytes.len() / 2]),
        ("tail.parquet", &bytes[bytes.len() / 2..]),
        ("csv.parquet", b"text,label\na,b\n".as_slice()),
        ("empty.parquet", b"".as_slice()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let error = read_texts(&path, DataFormat::Parquet, "text", None).unwrap_err();
        assert!(
            matches!(error, DataError::Parquet { .. }) && error.to_string().contains(name),
            "{name}: {error}"
        );
    }
}
