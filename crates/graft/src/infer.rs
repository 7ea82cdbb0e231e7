//! `eval`, `predict` and `embed` on a file: the inputs are read and checked first (a typo fails
//! before a device is probed), then the device is chosen and said, and one `graft_train::Model`
//! does the work on the examples in memory.

use graft_train::{
    Backend, EmbedOptions, Embeddings, Evaluation, Input, Model, ModelSource, Prediction, Progress,
    TrainError, check_batch_size, read_input, select_device,
};

/// Selects the device and says which it is.
fn device(backend: Backend, progress: &dyn Progress) -> Result<burn::tensor::Device, TrainError> {
    let selected = select_device(backend)?;
    progress.info(&format!("device: {}", selected.description));
    Ok(selected.device)
}

/// Scores a run on a labelled file (the run's input and label columns unless given).
pub fn evaluate(
    run: &std::path::Path,
    input: &Input,
    label_column: Option<&str>,
    batch_size: usize,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<Evaluation, TrainError> {
    check_batch_size(batch_size)?;
    let source = ModelSource::run(run)?;
    let input = source.input(input);
    let label_column = label_column.or(source.label_column.as_deref());
    let examples = read_input(source.modality, &input, label_column)?;
    let examples = source.check_labelled(examples, &input.path)?;
    let model = Model::open(run, &device(backend, progress)?)?;
    model.evaluate(examples, &input.path, batch_size, progress)
}

/// Predictions for every input of a file, in order: from a run, a PEFT adapter, or a pretrained
/// folder's own classifier.
pub fn predict(
    model: &std::path::Path,
    input: &Input,
    batch_size: usize,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<Vec<Prediction>, TrainError> {
    check_batch_size(batch_size)?;
    let source = ModelSource::identify(model)?;
    let examples = read_input(source.modality, &source.input(input), None)?;
    let model = Model::open(model, &device(backend, progress)?)?;
    model.predict(&examples, batch_size, progress)
}

/// Embeddings of every input of a file, in order, with a model folder's backbone as it is.
pub fn embed(
    model: &std::path::Path,
    input: &Input,
    options: &EmbedOptions,
    backend: Backend,
    progress: &dyn Progress,
) -> Result<Embeddings, TrainError> {
    check_batch_size(options.batch_size)?;
    let source = ModelSource::identify(model)?;
    let examples = read_input(source.modality, input, None)?;
    let model = Model::open(model, &device(backend, progress)?)?;
    model.embed(&examples, options, progress)
}
