//! Push progress on stderr: bars on a terminal, plain lines in CI logs.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where push progress goes: bars per blob on a terminal, one plain line per
/// blob otherwise (CI logs), nothing with `--quiet`. Always stderr.
pub(crate) struct Reporter {
    quiet: bool,
    bars: Option<MultiProgress>,
}

impl Reporter {
    pub(crate) fn new(quiet: bool) -> Self {
        let bars = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self { quiet, bars }
    }

    pub(crate) fn line(&self, message: &str) {
        if self.quiet {
            return;
        }
        let line = format!("imgpack: {message}");
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// A byte counter for one upload: a visible bar on a terminal, hidden elsewhere.
    pub(crate) fn bar(&self, label: &str, size: u64) -> ProgressBar {
        match &self.bars {
            Some(bars) => {
                let bar = bars.add(ProgressBar::new(size));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(label.to_owned());
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            }
            None => ProgressBar::hidden(),
        }
    }
}
