//! `eval`, `predict` and `embed` on a file: the inputs are read and checked first (a typo fails
//! before a device is probed), then the device is chosen and said, and one `graft_train::Model`
//! does the work a window of examples at a time (embeddings go to their file as each window is
//! done).

use graft_train::{
    Backend, EmbedOptions, EmbeddingShards, Embeddings, EmbeddingsFile, Evaluation, Input, Model,
    ModelSource, Precision, Prediction, Progress, Shard, TrainError, check_batch_size, read_input,
    select_device,
};

/// Where and in what float type the model runs.
#[derive(Debug, Clone, Copy)]
pub struct Compute {
    pub backend: Backend,
    pub precision: Precision,
}

impl Compute {
    /// Selects the device, says which it is, and opens `path` on it in the precision.
    pub fn open(
        &self,
        path: &std::path::Path,
        progress: &dyn Progress,
    ) -> Result<Model, TrainError> {
        let selected = select_device(self.backend)?;
        let precision = match self.precision {
            Precision::F32 => String::new(),
            other => format!(", {other}"),
        };
        progress.info(&format!("device: {}{precision}", selected.description));
        Model::open(path, &selected.device)?.with_precision(self.precision)
    }
}

/// Scores a run on a labelled file (the run's input and label columns unless given).
pub fn evaluate(
    run: &std::path::Path,
    input: &Input,
    label_column: Option<&str>,
    batch_size: usize,
    compute: Compute,
    progress: &dyn Progress,
) -> Result<Evaluation, TrainError> {
    check_batch_size(batch_size)?;
    let source = ModelSource::run(run)?;
    let input = source.input(input);
    let label_column = label_column.or(source.label_column.as_deref());
    let examples = read_input(source.modality, &input, label_column)?;
    let examples = source.check_labelled(examples, &input.path)?;
    let model = compute.open(run, progress)?;
    model.evaluate(examples, &input.path, batch_size, progress)
}

/// Predictions for every input of a file, in order: from a run, a PEFT adapter, or a pretrained
/// folder's own classifier.
pub fn predict(
    model: &std::path::Path,
    input: &Input,
    batch_size: usize,
    compute: Compute,
    progress: &dyn Progress,
) -> Result<Vec<Prediction>, TrainError> {
    check_batch_size(batch_size)?;
    let source = ModelSource::identify(model)?;
    let examples = read_input(source.modality, &source.input(input), None)?;
    let model = compute.open(model, progress)?;
    model.predict(&examples, batch_size, progress)
}

/// Embeddings of every input of a file, in order, with a model folder's backbone as it is,
/// written to `output` a window at a time (memory holds one window's work, not every row).
/// With a `shard` I/N, only the I-th of N contiguous slices of the inputs, into the folder
/// `output` as `embeddings-I-of-N.safetensors` beside a `manifest.json` that lists every shard's
/// file and rows in order. Returns the embeddings' shape and settings, without values.
pub fn embed(
    model: &std::path::Path,
    input: &Input,
    options: &EmbedOptions,
    compute: Compute,
    output: &std::path::Path,
    shard: Option<Shard>,
    progress: &dyn Progress,
) -> Result<Embeddings, TrainError> {
    check_batch_size(options.batch_size)?;
    let source = ModelSource::identify(model)?;
    let mut examples = read_input(source.modality, input, None)?;
    let mut path = output.to_path_buf();
    let mut manifest = None;
    if let Some(shard) = shard {
        let slices = EmbeddingShards::new(examples.len(), shard.count);
        let rows = slices.rows(shard.index);
        examples = examples.drain(rows).collect();
        std::fs::create_dir_all(output).map_err(|source| TrainError::Io {
            path: output.to_path_buf(),
            source,
        })?;
        path = output.join(slices.file(shard.index));
        manifest = Some(slices);
    }
    let model = compute.open(model, progress)?;
    let mut file: Option<EmbeddingsFile> = None;
    let shape = model.embed_windows(&examples, options, progress, |shape, first, rows| {
        if file.is_none() {
            file = Some(EmbeddingsFile::create(&path, shape)?);
        }
        file.as_mut()
            .expect("created above")
            .write_rows(first, rows)
    })?;
    match file {
        Some(file) => file.finish()?,
        None => shape.save(&path)?,
    }
    if let Some(slices) = manifest {
        slices.write_manifest(output, shape.width)?;
    }
    Ok(shape)
}
