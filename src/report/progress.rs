//! Progress while training: a bar per epoch with images/s and ETA on a
//! terminal (indicatif), and plain log lines every ~10% otherwise.

use crate::metrics::TrainMetrics;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running progress reporter; [`Progress::finish`] stops it.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Follows `metrics.train_steps()` towards `total_steps`.
    pub fn start(
        metrics: TrainMetrics,
        total_steps: usize,
        steps_per_epoch: usize,
        epochs: usize,
        batch_size: usize,
    ) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                follow(
                    metrics,
                    total_steps,
                    steps_per_epoch.max(1),
                    epochs,
                    batch_size,
                    flag,
                )
            })
            .ok();
        Progress { stop, thread }
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn follow(
    metrics: TrainMetrics,
    total: usize,
    per_epoch: usize,
    epochs: usize,
    batch: usize,
    stop: Arc<AtomicBool>,
) {
    let started = Instant::now();
    // Steps done before this process started (a resumed run) do not count towards its speed.
    let first = (metrics.train_steps() as usize).min(total);
    let terminal = std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(
        Some(per_epoch as u64),
        if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps {msg} ETA {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut last_logged_tenth = 0;
    let mut epoch_shown = usize::MAX;
    while !stop.load(Ordering::SeqCst) {
        let done = (metrics.train_steps() as usize).min(total);
        let epoch = (done / per_epoch).min(epochs.saturating_sub(1));
        if epoch != epoch_shown {
            bar.reset();
            bar.set_prefix(format!("epoch {}/{}", epoch + 1, epochs));
            epoch_shown = epoch;
        }
        let elapsed = started.elapsed().as_secs_f64().max(1e-9);
        let images_per_s = (done - first) as f64 * batch as f64 / elapsed;
        bar.set_position((done - epoch * per_epoch) as u64);
        bar.set_message(format!("{images_per_s:.0} img/s"));
        let tenth = done * 10 / total.max(1);
        if !terminal && tenth > last_logged_tenth {
            last_logged_tenth = tenth;
            let eta = if done > first {
                elapsed * (total - done) as f64 / (done - first) as f64
            } else {
                0.0
            };
            log::info!("progress: step {done}/{total} (epoch {}/{epochs}), {images_per_s:.1} images/s, ETA {eta:.0}s", epoch + 1);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bar.finish_and_clear();
}
