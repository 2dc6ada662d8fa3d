//! The main job (`ard-pipeline --config FILE`): the run folder, metrics and
//! the HTTP endpoint, signal handling, the training engine, and the final
//! report.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::{self, Phase, PipelineStatus, Signal, TrainMetrics};
use crate::stages::{self, RunOptions};
use crate::train::{self, recorder::Recorder, validation::SelectionHandle};
use ard_actors::CancelToken;
use indexmap::IndexMap;
use serde::Serialize;
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
    /// Accuracy (%) per evaluation of the last evaluated snapshot, in the
    /// configured order (`final_test` has the image count and intervals).
    pub final_eval: IndexMap<String, f64>,
    /// Issue 6: worst cases, the best-by-validation checkpoint's test numbers
    /// (`best_eval`, `best_epoch`, ...), `robustness_gap`, the guard.
    #[serde(flatten)]
    pub selection: Box<crate::train::selection::SelectionSummary>,
}

impl RunReport {
    /// The human-readable table printed at the end of a run: the stages,
    /// then each checkpoint's test numbers under a heading
    /// ([`SelectionSummary::table`](crate::train::selection::SelectionSummary::table)).
    pub fn table(&self) -> String {
        use crate::report::{plural::count, stage_table};
        let mut s = format!(
            "run {} ({}): {}, {} in {:.1}s\n",
            self.run,
            self.engine,
            count(self.steps as u64, "step"),
            count(self.epochs as u64, "epoch"),
            self.wall_s
        );
        s.push_str(&stage_table::stage_table(self.stages.iter().map(|st| {
            stage_table::StageRow {
                stage: &st.stage,
                images_per_s: st.images_per_s,
                busy: st.busy_share,
                blocked: st.blocked_share,
                idle: st.idle_share,
            }
        })));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::EvalReport;
    use crate::train::selection::{BestRecord, SelectionSummary, ValidationScore};

    fn report(acc: &[(&str, f64)], worst: f64) -> EvalReport {
        EvalReport {
            images: 1000,
            accuracy: acc.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            worst_case: worst,
            ..EvalReport::default()
        }
    }

    #[test]
    fn the_end_of_run_block_names_checkpoint_split_and_images_in_configured_order() {
        // Configured order, not alphabetical: natural, train_attack, pgd20, apgd_ce.
        let order = [
            ("natural", 45.3),
            ("train_attack", 30.7),
            ("pgd20", 25.1),
            ("apgd_ce", 24.0),
        ];
        let fin = report(&order, 23.5);
        let best = report(&order.map(|(k, v)| (k, v - 1.0)), 22.5);
        let rec = BestRecord {
            epoch: 2,
            step: 20,
            attack: "pgd10".into(),
            images: 500,
            validation: ValidationScore {
                natural: 44.0,
                robust: 26.0,
            },
        };
        let summary = SelectionSummary::new(Some(&fin), Some((&rec, Some(&best))), None);
        let run = RunReport {
            run: "r".into(),
            engine: "pipeline".into(),
            steps: 20,
            epochs: 2,
            wall_s: 1.0,
            final_loss: None,
            stages: Vec::new(),
            final_eval: fin.accuracy.clone(),
            selection: Box::new(summary),
        };
        let table = run.table();
        let at = |needle: &str| {
            table
                .find(needle)
                .unwrap_or_else(|| panic!("{needle:?} not in\n{table}"))
        };
        let heading =
            at("final checkpoint (final.safetensors) on the test split, first 1,000 images:");
        let rows: Vec<usize> = [
            "natural:",
            "train_attack:",
            "pgd20:",
            "apgd_ce:",
            "worst_case:",
        ]
        .iter()
        .map(|n| at(n))
        .collect();
        assert!(heading < rows[0], "{table}");
        assert!(
            rows.windows(2).all(|w| w[0] < w[1]),
            "not in order:\n{table}"
        );
        assert!(
            table.contains("natural: 45.30% (42.2-48.4, n=1,000)"),
            "{table}"
        );
        assert!(
            table.contains("worst_case: 23.50% (21.0-26.2, n=1,000) (right clean and under every one of natural, train_attack, pgd20, apgd_ce)"),
            "{table}"
        );
        let best_heading =
            at("best checkpoint (best.safetensors) on the test split, first 1,000 images:");
        assert!(best_heading > rows[4], "{table}");
        assert!(
            table.contains("validation natural 44.00% (39.7-48.4, n=500)"),
            "{table}"
        );
        // summary.json keeps the order and carries the count and intervals.
        let json = serde_json::to_string(&run).unwrap();
        let pos = |k: &str| json.find(&format!("\"{k}\":")).unwrap();
        assert!(
            pos("natural") < pos("train_attack") && pos("pgd20") < pos("apgd_ce"),
            "{json}"
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["final_test"]["images"], 1000);
        let lo = v["final_test"]["intervals"]["pgd20"]["lo"]
            .as_f64()
            .unwrap();
        assert!((lo - 22.5).abs() < 0.1, "{v}");
        assert!(
            v["final_test"]["worst_case_interval"]["hi"].is_number(),
            "{v}"
        );
    }
}
