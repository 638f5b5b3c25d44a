//! Progress bars for push and pull (indicatif), one per blob, drawn only on
//! a terminal.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use ingot_registry::client::{Event, Observer, Quiet};

struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Observer for Bars {
    fn event(&self, e: Event<'_>) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            Event::Start { digest, size } => {
                let bar = self.multi.add(ProgressBar::new(size));
                bar.set_style(
                    ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_prefix(digest.short().to_string());
                bars.insert(digest.to_string(), bar);
            }
            Event::Bytes { digest, n } => {
                if let Some(b) = bars.get(&digest.to_string()) {
                    b.inc(n);
                }
            }
            Event::Done { digest, skipped } => match bars.remove(&digest.to_string()) {
                Some(b) => b.finish_with_message("done"),
                None if skipped => {
                    let _ = self.multi.println(format!("{} already there", digest.short()));
                }
                None => {}
            },
        }
    }
}

/// Bars on a terminal, nothing otherwise (or with `-q`).
pub fn observer(quiet: bool) -> Arc<dyn Observer> {
    if quiet || !std::io::stderr().is_terminal() {
        return Arc::new(Quiet);
    }
    Arc::new(Bars {
        multi: MultiProgress::new(),
        bars: Mutex::new(HashMap::new()),
    })
}
