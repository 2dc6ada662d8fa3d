//! Progress of a long evaluation (APGD-T on 1,000 images runs for an hour on
//! a CPU): on a terminal a bar naming the attack with images done and an
//! ETA; otherwise (a log file, a pod's output) a log line every ~30 s and one
//! when each attack finishes, so a log is never silent for minutes.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Seconds between log lines when stderr is not a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// One progress line: `eval: apgd_ce 412/1,000 images (41%), 120 s, 3.4 images/s, about 172 s left`.
pub fn line(label: &str, done: usize, n: usize, secs: f64) -> String {
    use super::interval::thousands;
    let n1 = n.max(1);
    let rate = done as f64 / secs.max(1e-9);
    let left = (n - done.min(n)) as f64 / rate.max(1e-9);
    let eta = if done >= n {
        "done".to_string()
    } else {
        format!("about {left:.0} s left")
    };
    format!(
        "eval: {label} {}/{} images ({}%), {secs:.0} s, {rate:.1} images/s, {eta}",
        thousands(done as u64),
        thousands(n as u64),
        done * 100 / n1
    )
}

/// Where progress goes.
enum Sink {
    Bar(ProgressBar),
    Log {
        every: Duration,
        last: Instant,
        emit: Box<dyn FnMut(String) + Send>,
    },
}

/// Progress of the evaluation running: `tick(label, done, n)` after each
/// batch; a new label (the next attack) starts its own count and clock.
pub struct EvalProgress {
    sink: Sink,
    label: String,
    began: Instant,
}

impl EvalProgress {
    /// A bar when stderr is a terminal, log lines every [`LOG_EVERY`] otherwise.
    pub fn stderr() -> EvalProgress {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "eval {msg} [{bar:30}] {pos}/{len} images, {elapsed} (ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            EvalProgress::with(Sink::Bar(bar))
        } else {
            EvalProgress::logging(LOG_EVERY, |l| log::info!("{l}"))
        }
    }

    /// Lines to `emit`: at most one per `every` within an attack, and one when
    /// each attack finishes.
    pub fn logging(every: Duration, emit: impl FnMut(String) + Send + 'static) -> EvalProgress {
        EvalProgress::with(Sink::Log {
            every,
            last: Instant::now(),
            emit: Box::new(emit),
        })
    }

    fn with(sink: Sink) -> EvalProgress {
        EvalProgress {
            sink,
            label: String::new(),
            began: Instant::now(),
        }
    }

    /// `done` of `n` images of the evaluation `label` are through.
    pub fn tick(&mut self, label: &str, done: usize, n: usize) {
        let now = Instant::now();
        if label != self.label {
            self.label = label.to_string();
            self.began = now;
            if let Sink::Bar(bar) = &self.sink {
                bar.reset();
                bar.set_length(n as u64);
                bar.set_message(label.to_string());
            }
        }
        match &mut self.sink {
            Sink::Bar(bar) => bar.set_position(done as u64),
            Sink::Log { every, last, emit } => {
                if done >= n || now.duration_since(*last) >= *every {
                    *last = now;
                    let secs = now.duration_since(self.began).as_secs_f64();
                    emit(line(label, done, n, secs));
                }
            }
        }
    }

    /// Clears the bar.
    pub fn finish(self) {
        if let Sink::Bar(bar) = self.sink {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn collected(every: Duration, ticks: &[(&str, usize, usize)]) -> Vec<String> {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let mut p = EvalProgress::logging(every, move |l| sink.lock().unwrap().push(l));
        for (label, done, n) in ticks {
            p.tick(label, *done, *n);
        }
        p.finish();
        let out = lines.lock().unwrap().clone();
        out
    }

    #[test]
    fn the_log_says_which_attack_how_far_and_how_long() {
        let ticks = [
            ("pgd20", 500, 1000),
            ("pgd20", 1000, 1000),
            ("apgd_ce", 7, 40),
        ];
        // Within the interval only finished attacks get a line.
        let quiet = collected(Duration::from_secs(3600), &ticks);
        assert_eq!(quiet.len(), 1, "{quiet:?}");
        assert!(
            quiet[0].starts_with("eval: pgd20 1,000/1,000 images (100%)"),
            "{quiet:?}"
        );
        assert!(quiet[0].ends_with("done"), "{quiet:?}");
        // Past the interval every batch is logged, each with an ETA.
        let all = collected(Duration::ZERO, &ticks);
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(
            all[0].starts_with("eval: pgd20 500/1,000 images (50%)"),
            "{all:?}"
        );
        assert!(all[0].contains("s left"), "{all:?}");
        assert!(
            all[2].starts_with("eval: apgd_ce 7/40 images (17%)"),
            "{all:?}"
        );
    }

    #[test]
    fn a_line_has_rate_and_time_left() {
        assert_eq!(
            line("apgd_t", 250, 1000, 100.0),
            "eval: apgd_t 250/1,000 images (25%), 100 s, 2.5 images/s, about 300 s left"
        );
    }
}
