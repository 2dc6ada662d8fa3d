//! The main job (`ard-pipeline --config FILE`): the run folder, metrics and
//! the HTTP endpoint, signal handling, the training engine, and the final
//! report.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::{self, Phase, PipelineStatus, Signal, TrainMetrics};
use crate::stages::{self, RunOptions};
use crate::train::{self, recorder::Recorder, validation::SelectionHandle};
use ard_actors::CancelToken;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Which engine trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The five-stage actor pipeline (default).
    Pipeline,
    /// One thread, one step after the other: the semantic reference.
    Sequential,
}

pub use crate::train::records::StageReport;

/// What `summary.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run: String,
    pub engine: String,
    pub steps: usize,
    pub epochs: usize,
    /// Wall-clock seconds of the whole run: with resumptions, every earlier
    /// process's time up to its last checkpoint plus this process's.
    pub wall_s: f64,
    pub final_loss: Option<f64>,
    pub stages: Vec<StageReport>,
    /// Accuracy (%) per evaluation of the last evaluated snapshot.
    pub final_eval: BTreeMap<String, f64>,
    /// Issue 6: worst cases, the best-by-validation checkpoint's test numbers
    /// (`best_eval`, `best_epoch`, ...), `robustness_gap`, the guard.
    #[serde(flatten)]
    pub selection: Box<crate::train::selection::SelectionSummary>,
}

impl RunReport {
    /// The human-readable table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut s = format!(
            "run {} ({}): {} steps, {} epochs in {:.1}s\n",
            self.run, self.engine, self.steps, self.epochs, self.wall_s
        );
        if !self.stages.is_empty() {
            s.push_str(&format!(
                "{:<10} {:>10} {:>7} {:>8} {:>7}\n",
                "stage", "images/s", "busy", "blocked", "idle"
            ));
            for st in &self.stages {
                s.push_str(&format!(
                    "{:<10} {:>10.1} {:>6.1}% {:>7.1}% {:>6.1}%\n",
                    st.stage,
                    st.images_per_s,
                    100.0 * st.busy_share,
                    100.0 * st.blocked_share,
                    100.0 * st.idle_share
                ));
            }
        }
        for (name, acc) in &self.final_eval {
            s.push_str(&format!("{name:>14}: {acc:6.2}%\n"));
        }
        s.push_str(&self.selection.table());
        s
    }
}

/// How the job ended when it did not fail.
#[derive(Debug)]
pub enum JobEnd {
    Finished(RunReport),
    /// Stopped by a signal after checkpointing; exit with `signal.exit_code()`.
    Interrupted(Signal),
}

/// Runs the whole job as configured.
pub fn run_job(cfg: &Config, engine: Engine) -> Result<JobEnd> {
    let started = Instant::now();
    let (dir, checkpoint) = train::resume::open_run(cfg)?;
    let wall_before = checkpoint.as_ref().map_or(0.0, |c| c.state.wall_s);
    log::info!("run folder {}", dir.path.display());
    let registry = prometheus::Registry::new();
    let attack_label = cfg.attack.build().name();
    let eval_names: Vec<&str> = cfg.eval.attacks.iter().map(String::as_str).collect();
    let train_metrics = TrainMetrics::register(
        &registry,
        &cfg.run.name,
        &[attack_label.as_str()],
        &eval_names,
    )?;
    if let Some(c) = &checkpoint {
        // The step counter (/status, progress, Prometheus) continues from the checkpoint.
        train_metrics.inc_train_steps(c.state.position.step as u64);
    }
    let status = Arc::new(PipelineStatus::new(train_metrics.clone(), registry.clone()));
    let server = metrics::start(&cfg.metrics.listen, registry.clone(), status.clone())?;
    if let Some(server) = &server {
        log::info!(
            "metrics on http://{}/metrics (status: /status)",
            server.addr()
        );
    }
    // One token stops either engine: a signal cancels it, even during setup.
    let cancel = CancelToken::new();
    let signals = {
        let cancel = cancel.clone();
        metrics::install(move |signal| {
            log::warn!("{}: finishing the current step, checkpointing, then exiting (again to exit at once)", signal.name());
            cancel.cancel();
        })?
    };

    let train_images = crate::data::validation::train_images(&cfg.data);
    let per_epoch = train_images.div_ceil(cfg.data.batch_size);
    let progress = crate::report::progress::Progress::start(
        train_metrics.clone(),
        train::context::total_steps(cfg, train_images),
        per_epoch,
        cfg.train.epochs,
        cfg.data.batch_size,
    );
    let result = match engine {
        Engine::Pipeline => {
            let options = RunOptions {
                resume: checkpoint,
                on_start: Some(Box::new({
                    let status = status.clone();
                    move |stats| status.attach(stats)
                })),
                cancel: Some(cancel.clone()),
            };
            stages::run_pipeline(
                cfg,
                Some(&dir),
                &registry,
                Some(train_metrics.clone()),
                options,
            )
            .map(|outcome| {
                let wall = outcome.summary.wall.as_secs_f64();
                let stages = outcome
                    .summary
                    .stages
                    .iter()
                    .map(|s| {
                        let shares = s.shares(wall);
                        StageReport {
                            stage: s.stage.clone(),
                            images_per_s: shares.images_per_s,
                            busy_share: shares.busy,
                            blocked_share: shares.blocked,
                            idle_share: shares.idle,
                        }
                    })
                    .collect::<Vec<StageReport>>();
                Recorder::new(Some(dir.clone()), None).finished(&stages);
                let (final_eval, selection) = SelectionHandle::summarize(
                    outcome.selection.as_ref(),
                    outcome.evals.last().map(|e| &e.report),
                );
                RunReport {
                    run: cfg.run.name.clone(),
                    engine: "pipeline".into(),
                    steps: outcome.epochs.iter().map(|e| e.steps).sum(),
                    epochs: outcome.epochs.len(),
                    wall_s: wall_before + started.elapsed().as_secs_f64(),
                    final_loss: outcome.epochs.last().map(|e| e.mean_loss),
                    stages,
                    final_eval,
                    selection: Box::new(selection),
                }
            })
        }
        Engine::Sequential => {
            status.set_phase(Phase::Running);
            train::sequential::train_sequential_with(
                cfg,
                Some(&dir),
                checkpoint.as_ref(),
                Some(&cancel),
                Some(&train_metrics),
                |line| log::info!("{line}"),
            )
            .map(|outcome| {
                Recorder::new(Some(dir.clone()), None).finished(&[]);
                let (final_eval, selection) = SelectionHandle::summarize(
                    outcome.selection.as_ref(),
                    outcome.evals.last().map(|e| &e.report),
                );
                RunReport {
                    run: cfg.run.name.clone(),
                    engine: "sequential".into(),
                    steps: outcome.steps,
                    epochs: outcome.epochs.len(),
                    wall_s: wall_before + started.elapsed().as_secs_f64(),
                    final_loss: outcome.epochs.last().map(|e| e.mean_loss),
                    stages: Vec::new(),
                    final_eval,
                    selection: Box::new(selection),
                }
            })
        }
    };
    progress.finish();
    status.set_phase(match &result {
        Err(Error::Cancelled) => Phase::Stopping,
        _ => Phase::Finished,
    });
    if let Some(server) = server {
        if let Err(e) = server.shutdown() {
            log::warn!("metrics endpoint shutdown: {e}");
        }
    }
    let signal = signals.received();
    drop(signals);
    match result {
        Ok(report) => {
            let json = serde_json::to_string_pretty(&report).map_err(Error::json("summary"))?;
            dir.write_text("summary.json", &json)?;
            train::resume::mark_finished(&dir)?;
            Ok(JobEnd::Finished(report))
        }
        Err(Error::Cancelled) => match signal {
            Some(signal) => Ok(JobEnd::Interrupted(signal)),
            None => Err(Error::Cancelled),
        },
        Err(e) => Err(e),
    }
}
