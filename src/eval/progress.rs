//! Progress of a long evaluation (APGD-T on 1,000 images runs for an hour on
//! a CPU): on a terminal a bar naming the attack with images done and an
//! ETA; otherwise (a log file, a pod's output) a log line every ~30 s and one
//! when each attack finishes. A batch can itself run for many minutes
//! (AutoAttack on 250 images), so between batches a timer thread repeats the
//! latest state every ~30 s: a log is never silent for minutes.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Seconds between log lines when stderr is not a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// One progress line: `eval: apgd_ce 412/1,000 images (41%), 120 s, 3.4 images/s, about 172 s left`
/// (before the first batch ends: `eval: apgd_ce 0/1,000 images, 120 s, first batch running`).
pub fn line(label: &str, done: usize, n: usize, secs: f64) -> String {
    use super::interval::thousands;
    let (done_text, n_text) = (thousands(done as u64), thousands(n as u64));
    if done == 0 && n > 0 {
        return format!("eval: {label} 0/{n_text} images, {secs:.0} s, first batch running");
    }
    let rate = done as f64 / secs.max(1e-9);
    let left = (n - done.min(n)) as f64 / rate.max(1e-9);
    let eta = if done >= n {
        "done".to_string()
    } else {
        format!("about {left:.0} s left")
    };
    format!(
        "eval: {label} {done_text}/{n_text} images ({}%), {secs:.0} s, {rate:.1} images/s, {eta}",
        done * 100 / n.max(1)
    )
}

/// What the log lines are made of, shared with the timer thread.
struct LogState {
    every: Duration,
    /// When the last line was emitted.
    last: Instant,
    label: String,
    done: usize,
    n: usize,
    began: Instant,
    emit: Box<dyn FnMut(String) + Send>,
}

impl LogState {
    fn emit_now(&mut self, now: Instant) {
        self.last = now;
        let secs = now.duration_since(self.began).as_secs_f64();
        let l = line(&self.label, self.done, self.n, secs);
        (self.emit)(l);
    }
}

/// Where progress goes.
enum Sink {
    Bar(ProgressBar),
    Log {
        state: Arc<Mutex<LogState>>,
        /// Dropping (or sending on) it stops the timer thread.
        stop: Sender<()>,
        /// None when every tick is logged (an interval of zero).
        timer: Option<JoinHandle<()>>,
    },
}

/// Progress of the evaluation running: `tick(label, done, n)` after each
/// batch; a new label (the next attack) starts its own count and clock.
pub struct EvalProgress {
    sink: Sink,
    label: String,
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
            bar.enable_steady_tick(Duration::from_secs(1));
            EvalProgress::with(Sink::Bar(bar))
        } else {
            EvalProgress::logging(LOG_EVERY, |l| log::info!("{l}"))
        }
    }

    /// Lines to `emit`: at most one per `every` within an attack (the latest
    /// state, from a timer while a batch runs), and one when each attack
    /// finishes.
    pub fn logging(every: Duration, emit: impl FnMut(String) + Send + 'static) -> EvalProgress {
        let now = Instant::now();
        let state = Arc::new(Mutex::new(LogState {
            every,
            last: now,
            label: String::new(),
            done: 0,
            n: 0,
            began: now,
            emit: Box::new(emit),
        }));
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = state.clone();
        let timer = (!every.is_zero()).then(|| {
            std::thread::spawn(move || loop {
                let wait = shared.lock().map_or(every, |s| {
                    s.every
                        .saturating_sub(s.last.elapsed())
                        .max(Duration::from_millis(10))
                });
                match stopped.recv_timeout(wait) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                if let Ok(mut s) = shared.lock() {
                    let now = Instant::now();
                    if !s.label.is_empty() && now.duration_since(s.last) >= s.every {
                        s.emit_now(now);
                    }
                }
            })
        });
        EvalProgress::with(Sink::Log { state, stop, timer })
    }

    fn with(sink: Sink) -> EvalProgress {
        EvalProgress {
            sink,
            label: String::new(),
        }
    }

    /// `done` of `n` images of the evaluation `label` are through.
    pub fn tick(&mut self, label: &str, done: usize, n: usize) {
        let now = Instant::now();
        if label != self.label {
            self.label = label.to_string();
            if let Sink::Bar(bar) = &self.sink {
                bar.reset();
                bar.set_length(n as u64);
                bar.set_message(label.to_string());
            }
        }
        match &mut self.sink {
            Sink::Bar(bar) => bar.set_position(done as u64),
            Sink::Log { state, .. } => {
                let Ok(mut s) = state.lock() else { return };
                if s.label != label {
                    s.label = label.to_string();
                    s.began = now;
                }
                (s.done, s.n) = (done, n);
                if done >= n || now.duration_since(s.last) >= s.every {
                    s.emit_now(now);
                }
            }
        }
    }

    /// Clears the bar, or stops the timer.
    pub fn finish(self) {
        match self.sink {
            Sink::Bar(bar) => bar.finish_and_clear(),
            Sink::Log { stop, timer, .. } => {
                let _ = stop.send(());
                if let Some(timer) = timer {
                    let _ = timer.join();
                }
            }
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

    #[test]
    fn a_long_batch_still_gets_lines() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let mut p = EvalProgress::logging(Duration::from_millis(50), move |l| {
            sink.lock().unwrap().push(l)
        });
        p.tick("autoattack", 0, 250);
        std::thread::sleep(Duration::from_millis(400));
        p.finish();
        let seen = lines.lock().unwrap().clone();
        assert!(seen.len() >= 3, "{seen:?}");
        assert!(
            seen.iter()
                .all(|l| l.starts_with("eval: autoattack 0/250 images, ")
                    && l.ends_with("first batch running")),
            "{seen:?}"
        );
        // Nothing after finish.
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(lines.lock().unwrap().len(), seen.len());
    }
}
