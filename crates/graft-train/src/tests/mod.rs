//! Tests of the training internals that span several modules: freezing, checkpoints and the
//! training loop's controls against PyTorch goldens. They live in the crate because what they
//! test is private to it.

mod freeze;
mod training_control;
