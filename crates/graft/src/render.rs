//! Renders library progress: progress bars on a terminal, plain lines otherwise; and tells the
//! library when SIGINT or SIGTERM asked the run to stop (a second one ends the process at once).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use signal_hook::consts::{SIGINT, SIGTERM};

use graft_train::{EpochMetrics, Progress};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Renderer {
    terminal: bool,
    bar: Mutex<Option<ProgressBar>>,
    /// Set by SIGINT and SIGTERM once [`Renderer::catch_signals`] is called.
    signals: Vec<(&'static str, Arc<AtomicBool>)>,
    told: AtomicBool,
}

/// The exit status of a process ended by `signal` (the shell's 128 + n).
pub fn signal_status(signal: &str) -> u8 {
    match signal {
        "SIGINT" => 128 + SIGINT as u8,
        _ => 128 + SIGTERM as u8,
    }
}

impl Renderer {
    pub fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
            signals: Vec::new(),
            told: AtomicBool::new(false),
        }
    }

    /// From now on SIGINT and SIGTERM ask the run to stop at its next step; a second one ends
    /// the process at once (130 or 143).
    pub fn catch_signals(&mut self) -> std::io::Result<()> {
        for (name, signal) in [("SIGINT", SIGINT), ("SIGTERM", SIGTERM)] {
            let flag = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register_conditional_shutdown(
                signal,
                i32::from(signal_status(name)),
                Arc::clone(&flag),
            )?;
            signal_hook::flag::register(signal, Arc::clone(&flag))?;
            self.signals.push((name, flag));
        }
        Ok(())
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

    fn interrupted(&self) -> Option<&'static str> {
        let (name, _) = self
            .signals
            .iter()
            .find(|(_, flag)| flag.load(Ordering::Relaxed))?;
        if !self.told.swap(true, Ordering::Relaxed) {
            self.println(&format!(
                "{name} received: stopping before the next step (again to stop at once)"
            ));
        }
        Some(name)
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
