//! A PEFT LoRA adapter folder for a LoRA run: `adapter_config.json` (SEQ_CLS over the run's base
//! model) and `adapter_model.safetensors` with the adapters and the head as PEFT's
//! `modules_to_save` classifier, so that
//! `PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(BASE,
//! num_labels=N), DIR)` computes the run's outputs.

use std::path::{Path, PathBuf};

use graft_model::ExportTarget;

use super::{copy_backbone_files, head_tensors, transformers};
use crate::error::{TrainError, TrainError as E};
use crate::files::{write_json_atomic, write_safetensors};
use crate::lora::{self, PeftAdapter};
use crate::run_dir::LoadedRun;

pub(super) fn write(
    run_dir: &Path,
    run: &LoadedRun,
    target: &ExportTarget,
    out: &Path,
) -> Result<String, TrainError> {
    transformers::check(run, target)?;
    let spec = run.manifest.lora.as_ref().expect("a LoRA run");
    let adapter_path = run_dir.join(lora::ADAPTER_WEIGHTS);
    let mut tensors = PeftAdapter::tensors_of(&adapter_path)?;
    tensors.extend(head_tensors(run, target, "base_model.model.")?);
    let source = &run.manifest.backbone_source;
    // A Hub id stays one (PEFT resolves it); a folder becomes its absolute path.
    let hub_id = source
        .to_str()
        .filter(|s| !source.exists() && graft_model::hub::parse_id(s).is_some());
    let base = match hub_id {
        Some(id) => PathBuf::from(id),
        None => std::fs::canonicalize(source).map_err(|e| E::Config {
            path: source.clone(),
            message: format!(
                "the run's base model is needed for its adapter's base_model_name_or_path: {e}"
            ),
        })?,
    };
    copy_backbone_files(run_dir, out, true)?;
    write_safetensors(&out.join(lora::ADAPTER_WEIGHTS), &tensors, None)?;
    let modules = match &run.manifest.head.native {
        Some(native) => native.modules(),
        None => vec![target.classifier.clone()],
    };
    let config = lora::adapter_config(spec, &base, &modules);
    write_json_atomic(&out.join(lora::ADAPTER_CONFIG), &config)?;
    write_json_atomic(&out.join("labels.json"), &run.manifest.labels)?;
    Ok(format!(
        "PEFT LoRA adapter (SEQ_CLS over {}, r = {}, {} layers)",
        base.display(),
        spec.r,
        spec.modules.len()
    ))
}
