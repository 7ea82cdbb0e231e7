//! Learning-rate schedules, as burn `LrScheduler`s so that burn's `ModuleLrScheduler` can give
//! each parameter group its own peak: constant, linear and cosine with linear warmup (the
//! transformers formulas, including lr 0 on the first warmup step) and PyTorch's one-cycle.

use burn::lr_scheduler::{LrScheduler, LrSchedulerRecord};
use burn::optim::LearningRate;

use crate::config::Schedule;

/// The schedule's shape over a whole run, without its peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleShape {
    pub kind: Schedule,
    pub total_steps: usize,
    /// Warmup steps (one-cycle: its rise, which may be fractional as in PyTorch).
    pub warmup: f64,
}

impl ScheduleShape {
    /// Builds the shape from the config's warmup (`warmup_steps`, else `warmup_ratio` of all
    /// steps, rounded up as transformers does; one-cycle's rise defaults to 30%).
    pub fn new(
        kind: Schedule,
        total_steps: usize,
        warmup_steps: Option<usize>,
        warmup_ratio: Option<f64>,
    ) -> Self {
        let total_steps = total_steps.max(1);
        let ratio = warmup_ratio.or((kind == Schedule::OneCycle).then_some(0.3));
        let warmup = match (warmup_steps, ratio) {
            (Some(steps), _) => steps as f64,
            (None, Some(r)) if kind == Schedule::OneCycle => r * total_steps as f64,
            (None, Some(r)) => (r * total_steps as f64).ceil(),
            (None, None) => 0.0,
        };
        Self {
            kind,
            total_steps,
            warmup,
        }
    }

    /// The multiple of the peak used by optimizer step `step` (0-based).
    pub fn factor(&self, step: usize) -> f64 {
        let (s, w, t) = (step as f64, self.warmup, self.total_steps as f64);
        match self.kind {
            Schedule::OneCycle => {
                // PyTorch OneCycleLR: cosine from peak/25 up to the peak, then down to peak/25e4.
                let (initial, last) = (1.0 / 25.0, 1.0 / 25.0 / 1e4);
                let rise_end = (w - 1.0).max(0.0);
                let end = t - 1.0;
                let anneal = |from: f64, to: f64, pct: f64| {
                    to + (from - to) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
                };
                if s <= rise_end && rise_end > 0.0 {
                    anneal(initial, 1.0, s / rise_end)
                } else {
                    anneal(1.0, last, (s - rise_end) / (end - rise_end))
                }
            }
            _ if s < w => s / w.max(1.0),
            Schedule::Constant => 1.0,
            Schedule::Linear => ((t - s) / (t - w).max(1.0)).max(0.0),
            Schedule::Cosine => {
                let progress = (s - w) / (t - w).max(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        }
    }
}

/// One parameter group's learning rate: `peak * shape.factor(step)`.
#[derive(Debug, Clone)]
pub struct ScheduledLr {
    pub peak: f64,
    pub shape: ScheduleShape,
    /// Optimizer steps taken so far.
    pub step: usize,
}

impl LrScheduler for ScheduledLr {
    fn step(&mut self) -> LearningRate {
        let lr = self.peak * self.shape.factor(self.step);
        self.step += 1;
        lr
    }

    fn to_record(&self) -> LrSchedulerRecord {
        LrSchedulerRecord::new().with_scalar("step", self.step as u64)
    }

    fn load_record(&mut self, record: LrSchedulerRecord) {
        if let Some(step) = record.scalar::<u64>("step") {
            self.step = step as usize;
        }
    }
}
