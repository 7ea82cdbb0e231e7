//! Renders library progress: progress bars on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;

use graft_train::{EpochMetrics, Progress};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Renderer {
    terminal: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Renderer {
    pub fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
        }
    }

    pub fn clear(&self) {
        if let Some(bar) = self.bar.lock().expect("renderer lock").take() {
            bar.finish_and_clear();
        }
    }

    fn println(&self, line: &str) {
        match self.bar.lock().expect("renderer lock").as_ref() {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

impl Progress for Renderer {
    fn stage(&self, name: &str, total: usize) {
        self.clear();
        if self.terminal {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>14} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(name.to_string());
            *self.bar.lock().expect("renderer lock") = Some(bar);
        } else if name == "embedding" || name == "test" {
            eprintln!("{name}: {total} examples");
        }
    }

    fn advance(&self, n: usize) {
        if let Some(bar) = self.bar.lock().expect("renderer lock").as_ref() {
            bar.inc(n as u64);
        }
    }

    fn finish_stage(&self) {
        self.clear();
    }

    fn info(&self, message: &str) {
        self.println(message);
    }

    fn epoch(&self, m: &EpochMetrics, best: bool) {
        let headline = m.headline().map_or(String::new(), |(name, value)| {
            format!("  {} {value:.4}", name.replace('_', " "))
        });
        self.println(&format!(
            "epoch {:>3}  train loss {:.4}  valid loss {:.4}{headline}  lr {:.2e}  {:.1}s{}",
            m.epoch,
            m.train_loss,
            m.valid_loss,
            m.lr,
            m.seconds,
            if best { "  *" } else { "" }
        ));
    }
}
