//! `graft init`: a commented starter config from a model reference and a data file. The model
//! folder says whether the data is text or images; the data says which columns hold the inputs
//! and the labels, and the task (one class, several labels, or a number). The written config is
//! parsed before it is returned, so what `init` writes, `train` reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use graft_data::DataFormat;
use graft_data::table::{self, Column, Value};
use graft_model::{Modality, ModelFolder, Preprocessing};

use crate::config::Config;
use crate::error::{TrainError, TrainError as E};
use crate::task::{self, Task};

/// Rows read to detect columns and the task.
const PREVIEW_ROWS: usize = 10_000;

const TEXT_NAMES: &[&str] = &[
    "text", "sentence", "review", "content", "document", "body", "comment", "question", "title",
    "input", "prompt",
];
/// Column names of pair data sets (GLUE, SNLI, STS-B, SICK, MS MARCO style), first then second.
const PAIR_NAMES: &[(&str, &str)] = &[
    ("sentence1", "sentence2"),
    ("sentence_a", "sentence_b"),
    ("sentence_A", "sentence_B"),
    ("premise", "hypothesis"),
    ("question1", "question2"),
    ("question", "sentence"),
    ("question", "answer"),
    ("question", "passage"),
    ("query", "passage"),
    ("query", "document"),
    ("text_a", "text_b"),
    ("text1", "text2"),
    ("s1", "s2"),
];
const LABEL_NAMES: &[&str] = &[
    "label",
    "labels",
    "target",
    "targets",
    "class",
    "category",
    "categories",
    "score",
    "rating",
    "sentiment",
    "tags",
    "y",
];
/// Column names of token-tagged data sets (CoNLL in `datasets`, WNUT, JSON exports).
const WORD_NAMES: &[&str] = &["tokens", "words", "token", "text"];
const IMAGE_NAMES: &[&str] = &["image", "img", "path", "file", "filename", "image_path"];
const IMAGE_EXTENSIONS: &[&str] = &[".png", ".jpg", ".jpeg"];

/// What `graft init` was asked for.
#[derive(Debug, Clone)]
pub struct InitRequest {
    /// A model folder or Hugging Face Hub id, written into the config as given.
    pub model: String,
    pub train: PathBuf,
    pub test: Option<PathBuf>,
}

/// The starter config and what was detected, for the user.
#[derive(Debug, Clone)]
pub struct StarterConfig {
    pub text: String,
    pub summary: Vec<String>,
}

/// What the data says.
struct Detected {
    format: &'static str,
    input: Option<(&'static str, String)>,
    /// Pairs of texts: the column of the second text.
    pair: Option<String>,
    label: Option<String>,
    task: Task,
    separator: Option<&'static str>,
    classes: BTreeMap<String, usize>,
    rows: usize,
}

/// Writes a starter config for `request` (nothing is written to disk here).
pub fn starter_config(request: &InitRequest) -> Result<StarterConfig, TrainError> {
    let folder = ModelFolder::open(Path::new(&request.model))?;
    if !folder.weights.is_file() {
        return Err(E::Config {
            path: folder.weights.clone(),
            message: "the model folder has no weights file (model.safetensors, its shards or \
                      pytorch_model.bin); a PyTorch checkpoint converts with `graft convert`"
                .into(),
        });
    }
    let (modality, model_side) = match folder.preprocessing()? {
        Preprocessing::Text(_) => (Modality::Text, None),
        Preprocessing::Image(t) => (Modality::Image, Some(t.image_size)),
    };
    let detected = detect(&request.train, modality)?;
    // Images much smaller than the model's input: a size near theirs, proposed, not set.
    let proposal = model_side.and_then(|model| {
        let side = typical_side(&request.train, &detected)?;
        (side * 2 < model).then(|| SizeProposal {
            images: side,
            model,
            size: side.div_ceil(16).max(2) * 16,
        })
    });
    let text = render(request, &folder, modality, &detected, proposal.as_ref());
    let origin = PathBuf::from("graft.toml");
    Config::parse(&text, &origin).map_err(|e| {
        E::Unsupported(format!(
            "graft init wrote a config it cannot read (a bug): {e}"
        ))
    })?;
    let mut summary = vec![format!(
        "model: {} ({})",
        request.model,
        folder.architecture.name()
    )];
    if let Some((key, column)) = &detected.input {
        summary.push(format!("{key}: `{column}`"));
    }
    let label = detected.label.as_deref().unwrap_or("the class folders");
    summary.push(format!(
        "{}: `{label}`, {}",
        if detected.task.logic().has_label_set() {
            "labels"
        } else {
            "target"
        },
        describe_task(&detected)
    ));
    if let Some(p) = &proposal {
        summary.push(format!(
            "images: about {} px, much smaller than the model's {} px input; image_size = {} \
             (commented in the config) trains faster on what the images hold",
            p.images, p.model, p.size
        ));
    }
    Ok(StarterConfig { text, summary })
}

/// A smaller input size for images much smaller than the model's input.
struct SizeProposal {
    /// The images' median shorter side.
    images: usize,
    model: usize,
    /// A multiple of 16 at or above the images' side (at least 32).
    size: usize,
}

/// The median shorter side of up to 32 of the training images (read from their headers), when
/// any can be read.
fn typical_side(train: &Path, detected: &Detected) -> Option<usize> {
    let examples = match &detected.input {
        None => graft_data::image::read_image_folder(train).ok()?,
        Some((_, column)) => {
            let format = DataFormat::from_extension(train);
            let mut examples = graft_data::read_texts(train, format, column, None).ok()?;
            graft_data::image::resolve_paths(&mut examples, train);
            examples
        }
    };
    let step = (examples.len() / 32).max(1);
    let mut sides: Vec<usize> = examples
        .iter()
        .step_by(step)
        .take(32)
        .filter_map(|e| {
            let (w, h) = match &e.bytes {
                Some(bytes) => image::ImageReader::new(std::io::Cursor::new(bytes.as_ref()))
                    .with_guessed_format()
                    .ok()?
                    .into_dimensions()
                    .ok()?,
                None => image::image_dimensions(&e.text).ok()?,
            };
            Some(w.min(h) as usize)
        })
        .collect();
    sides.sort_unstable();
    sides.get(sides.len() / 2).copied()
}

fn describe_task(d: &Detected) -> String {
    d.task.logic().describe(d.rows, &d.classes)
}

/// `a: 3, b: 5, ...`: up to 8 classes with their counts.
pub(crate) fn class_counts(classes: &BTreeMap<String, usize>) -> String {
    let mut shown: Vec<String> = classes
        .iter()
        .take(8)
        .map(|(name, n)| format!("{name}: {n}"))
        .collect();
    if classes.len() > 8 {
        shown.push("...".into());
    }
    shown.join(", ")
}

fn data_error(path: &Path, message: String) -> TrainError {
    E::Config {
        path: path.to_path_buf(),
        message,
    }
}

fn detect(train: &Path, modality: Modality) -> Result<Detected, TrainError> {
    if train.is_dir() {
        if modality == Modality::Text {
            return Err(data_error(
                train,
                "a folder is image data, but the model reads text: give a CSV, JSONL or parquet \
                 file"
                    .into(),
            ));
        }
        let examples = graft_data::image::read_image_folder(train)?;
        let mut classes = BTreeMap::new();
        for label in examples.iter().filter_map(|e| e.label.clone()) {
            *classes.entry(label).or_insert(0) += 1;
        }
        return Ok(Detected {
            format: "image_folder",
            input: None,
            pair: None,
            label: None,
            task: Task::Classification,
            separator: None,
            rows: examples.len(),
            classes,
        });
    }
    let (format, name) = match DataFormat::from_extension(train) {
        DataFormat::Csv => (DataFormat::Csv, "csv"),
        DataFormat::Jsonl => (DataFormat::Jsonl, "jsonl"),
        DataFormat::Parquet => (DataFormat::Parquet, "parquet"),
        DataFormat::Conll => (DataFormat::Conll, "conll"),
        DataFormat::Lines => {
            return Err(data_error(
                train,
                "graft init reads .csv, .jsonl, .parquet and .conll files (or an image folder)"
                    .into(),
            ));
        }
    };
    let columns = table::columns(train, format, PREVIEW_ROWS)?;
    // Token-tagged sentences: a list column of tags beside a list column of words.
    let tags = columns
        .iter()
        .find(|c| Task::TokenClassification.logic().detect(c).is_some());
    if let (Modality::Text, Some(tags)) = (modality, tags) {
        let is_list = |c: &&Column| {
            c.name != tags.name && c.values.iter().all(|v| matches!(v, Value::List(_)))
        };
        let words = pick(&columns, WORD_NAMES, &[&tags.name], |c| is_list(&c))
            .or_else(|| columns.iter().find(is_list))
            .ok_or_else(|| {
                data_error(
                    train,
                    format!(
                        "`{}` holds tags, but no column holds the words they tag",
                        tags.name
                    ),
                )
            })?;
        let conll = format == DataFormat::Conll;
        return Ok(Detected {
            format: name,
            input: (!conll).then(|| ("text_column", words.name.clone())),
            pair: None,
            label: (!conll).then(|| tags.name.clone()),
            task: Task::TokenClassification,
            separator: None,
            classes: crate::task::token_classification::entities_of(tags),
            rows: tags.values.len(),
        });
    }
    let found = || {
        columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let named = |name: &str| {
        columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name) && is_text(c))
    };
    let pair = match modality {
        Modality::Text => PAIR_NAMES
            .iter()
            .find_map(|(first, second)| Some((named(first)?, named(second)?))),
        Modality::Image => None,
    };
    let input = match modality {
        Modality::Text if pair.is_some() => {
            pair.map(|(first, _)| ("text_column", first.name.clone()))
        }
        Modality::Text => pick(&columns, TEXT_NAMES, &[], is_text)
            .or_else(|| longest_text(&columns))
            .map(|c| ("text_column", c.name.clone())),
        Modality::Image => pick(&columns, IMAGE_NAMES, &[], is_image)
            .or_else(|| columns.iter().find(|c| is_image(c)))
            .map(|c| ("image_column", c.name.clone())),
    }
    .ok_or_else(|| {
        let what = match modality {
            Modality::Text => "a text column",
            Modality::Image => "an image column (image bytes, or paths ending in .png/.jpg)",
        };
        data_error(train, format!("cannot find {what} among: {}", found()))
    })?;
    let pair = pair.map(|(_, second)| second.name.clone());
    let mut taken = vec![input.1.as_str()];
    taken.extend(pair.as_deref());
    let label = pick(&columns, LABEL_NAMES, &taken, |c| distinct(c) >= 2)
        .or_else(|| {
            // Else the last column that could be one (labels usually come last), not an id.
            columns.iter().rfind(|c| {
                !taken.contains(&c.name.as_str())
                    && distinct(c) >= 2
                    && !c.values.iter().any(|v| matches!(v, Value::Bytes))
                    && !is_id(c)
            })
        })
        .ok_or_else(|| {
            data_error(
                train,
                format!(
                    "cannot find a label column with at least two values among: {}",
                    found()
                ),
            )
        })?;
    let (task, separator) = task::detect(label);
    let mut classes = BTreeMap::new();
    if task.logic().has_label_set() {
        for value in &label.values {
            for name in label_names(value, separator) {
                *classes.entry(name).or_insert(0) += 1;
            }
        }
    }
    Ok(Detected {
        format: name,
        input: Some(input),
        pair,
        label: Some(label.name.clone()),
        task,
        separator,
        classes,
        rows: label.values.len(),
    })
}

/// The first column named like `names` (in their order) that `fits`, not among `taken`.
fn pick<'a>(
    columns: &'a [Column],
    names: &[&str],
    taken: &[&str],
    fits: impl Fn(&Column) -> bool,
) -> Option<&'a Column> {
    names.iter().find_map(|name| {
        columns.iter().find(|c| {
            c.name.eq_ignore_ascii_case(name) && !taken.contains(&c.name.as_str()) && fits(c)
        })
    })
}

/// A row id: named so, or `Unnamed: 0` (a pandas index written to CSV).
fn is_id(column: &Column) -> bool {
    let name = column.name.to_ascii_lowercase();
    matches!(name.as_str(), "id" | "idx" | "index" | "unnamed: 0" | "") || name.ends_with("_id")
}

fn share(column: &Column, test: impl Fn(&Value) -> bool) -> f64 {
    column.values.iter().filter(|v| test(v)).count() as f64 / column.values.len().max(1) as f64
}

fn is_text(column: &Column) -> bool {
    share(column, |v| matches!(v, Value::Text(_))) >= 0.9
}

/// The text column with the longest texts on average.
fn longest_text(columns: &[Column]) -> Option<&Column> {
    let mean_length = |c: &Column| {
        let total: usize = c
            .values
            .iter()
            .map(|v| match v {
                Value::Text(t) => t.chars().count(),
                _ => 0,
            })
            .sum();
        total / c.values.len().max(1)
    };
    columns
        .iter()
        .filter(|c| is_text(c))
        .max_by_key(|c| mean_length(c))
}

fn is_image(column: &Column) -> bool {
    share(column, |v| match v {
        Value::Bytes => true,
        Value::Text(t) => {
            let t = t.to_ascii_lowercase();
            IMAGE_EXTENSIONS.iter().any(|e| t.ends_with(e))
        }
        _ => false,
    }) >= 0.9
}

/// How many different values a column holds (missing values and bytes aside).
pub(crate) fn distinct(column: &Column) -> usize {
    let mut seen: Vec<String> = column
        .values
        .iter()
        .filter(|v| !matches!(v, Value::Missing | Value::Bytes))
        .map(|v| format!("{v:?}"))
        .collect();
    seen.sort();
    seen.dedup();
    seen.len()
}

fn label_names(value: &Value, separator: Option<&str>) -> Vec<String> {
    match (value, separator) {
        (Value::List(items), _) => items.clone(),
        (Value::Text(text), Some(separator)) => text
            .split(separator)
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
        (Value::Text(text), None) => vec![text.clone()],
        (Value::Number(n), _) => vec![n.to_string()],
        _ => Vec::new(),
    }
}

fn quoted(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

fn path_text(path: &Path) -> String {
    quoted(&path.to_string_lossy())
}

fn render(
    request: &InitRequest,
    folder: &ModelFolder,
    modality: Modality,
    d: &Detected,
    proposal: Option<&SizeProposal>,
) -> String {
    let mut out = String::new();
    let mut line = |text: &str| {
        out.push_str(text);
        out.push('\n');
    };
    let stem = request
        .train
        .file_stem()
        .map_or("run".into(), |s| s.to_string_lossy().to_string());
    line(&format!(
        "# A starter config written by `graft init` for {} on {}.",
        request.model,
        request.train.display()
    ));
    line(&format!("# Detected: {}.", describe_task(d)));
    line("# Check it, then: graft train <this file>. README.md explains every key.");
    line("");
    line("[model]");
    line(&format!("backbone = {}", quoted(&request.model)));
    match modality {
        Modality::Text => {
            line(
                "# pooling = \"mean\"     # default: the folder's sentence-transformers pooling, else mean",
            );
            line(
                "# max_length = 256     # default: the folder's max_seq_length, else its max positions",
            );
        }
        Modality::Image => match proposal {
            Some(p) => line(&format!(
                "# image_size = {}      # the images are about {} px, much smaller than the \
                 model's {}: a size near theirs trains faster",
                p.size, p.images, p.model
            )),
            None => line("# image_size = 224     # default: the model folder's input size"),
        },
    }
    line("");
    line("[data]");
    line(&format!("format = {}", quoted(d.format)));
    line(&format!("train = {}", path_text(&request.train)));
    match &request.test {
        Some(test) => line(&format!("test = {}", path_text(test))),
        None => line("# test = \"...\"          # a held-out file to score the best epoch on"),
    }
    line(
        "valid_fraction = 0.1    # held out of train to pick the best epoch (or: valid = \"file\")",
    );
    if let Some((key, column)) = &d.input {
        line(&format!("{key} = {}", quoted(column)));
    }
    if let Some(pair) = &d.pair {
        line(&format!(
            "text_pair = {}    # pairs of texts, read together as a cross-encoder reads them",
            quoted(pair)
        ));
    }
    if let Some(label) = &d.label {
        line(&format!("label_column = {}", quoted(label)));
    }
    let names = Task::ALL
        .iter()
        .map(|t| t.logic().config_name().to_string());
    line(&format!(
        "task = {}     # {}",
        quoted(d.task.logic().config_name()),
        task::one_of(names)
    ));
    if let Some(separator) = d.separator {
        line(&format!("label_separator = {}", quoted(separator)));
    }
    line("");
    line("[head]");
    let native = modality == Modality::Text && folder.native_head().ok().flatten().is_some();
    let token_head = (d.task == Task::TokenClassification)
        .then(|| folder.token_head().ok().flatten())
        .flatten();
    if let Some(head) = token_head {
        line(&format!(
            "kind = \"native\"         # the family's own token head: exported as transformers' {}",
            head.model
        ));
    } else if native && d.pair.is_some() {
        line(
            "kind = \"native\"         # the family's own head: a cross-encoder, exported as transformers' ...ForSequenceClassification",
        );
    } else if native {
        line(
            "kind = \"linear\"         # or \"mlp\" (with hidden = [256]), or \"native\": the family's own head",
        );
    } else {
        line("kind = \"linear\"         # or \"mlp\" with hidden = [256]");
    }
    line("");
    line("[freeze]");
    if d.task == Task::TokenClassification {
        line(
            "backbone = false        # fine-tune the encoder, as transformers' NER recipe does; true trains the head alone",
        );
    } else {
        line(
            "backbone = true         # train the head on features computed once; false fine-tunes all",
        );
    }
    line("");
    line("[train]");
    line("epochs = 10");
    line("batch_size = 32");
    if d.task == Task::TokenClassification {
        line("lr = 5e-5               # fine-tuning; a frozen backbone's head wants about 1e-3");
    } else {
        line("lr = 1e-3               # for the head; fine-tuning the backbone usually wants 2e-5");
    }
    line("optimizer = \"adamw\"");
    line("weight_decay = 0.01");
    line("seed = 42");
    line("");
    line("[output]");
    line(&format!("dir = {}", quoted(&format!("runs/{stem}"))));
    line("");
    line("# [track]");
    line("# mlflow = \"http://localhost:5000\"   # log params, metrics and artifacts to MLflow");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect_in(name: &str, text: &str, modality: Modality) -> Result<Detected, TrainError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        detect(&path, modality)
    }

    #[test]
    fn image_columns_are_found_by_their_values_and_ids_are_not_labels() {
        let csv = "id,picture,kind\n1,a.png,cat\n2,b.jpg,dog\n3,c.PNG,cat\n";
        let found = detect_in("images.csv", csv, Modality::Image).unwrap();
        assert_eq!(found.input, Some(("image_column", "picture".to_string())));
        assert_eq!(found.label.as_deref(), Some("kind"));
        assert_eq!(found.classes.len(), 2);

        let csv = "body,price,id\nred tea,3.5,1\ngreen tea,4.25,2\nblack tea,2.75,3\n";
        let found = detect_in("prices.csv", csv, Modality::Text).unwrap();
        assert_eq!(found.label.as_deref(), Some("price"));
        assert_eq!(found.task, Task::Regression);

        let error = detect_in("texts.csv", "a,b\nx,y\n", Modality::Image)
            .err()
            .unwrap();
        assert!(error.to_string().contains("image column"), "{error}");
    }
}
