//! The one interface of the training engines: an engine is given a [`Job`]
//! and returns what it [`Trained`]. An engine writes only its `fit`; the end
//! of a run is the same for every engine ([`Engine::train`]): after a guard
//! stop the student rolls back to the best checkpoint, then the final
//! weights are saved (the run folder's and `run.save_final`).

use super::folder::{RunFile, RunFolder};
use super::records::{EpochRecord, EvalRecord, StageReport};
use super::resume::Checkpoint;
use super::validation::SelectionHandle;
use crate::config::Config;
use crate::error::Result;
use crate::metrics::TrainMetrics;
use crate::models::Model;
use ard_actors::{CancelToken, RunSummary, StatsReader};

/// What an engine trains, where it writes, and how it reports and stops.
pub struct Job<'a> {
    pub cfg: &'a Config,
    /// The run folder (None: nothing is written, as in tests and `bench`).
    pub folder: Option<&'a RunFolder>,
    /// Continue from this training checkpoint.
    pub resume: Option<&'a Checkpoint>,
    /// The run's metrics (step counter, loss, evaluations).
    pub metrics: Option<&'a TrainMetrics>,
    /// Where the pipeline registers its per-stage metrics (None: a private registry).
    pub registry: Option<&'a prometheus::Registry>,
    /// Stops the run after a checkpoint ([`crate::Error::Cancelled`]).
    pub cancel: Option<&'a CancelToken>,
    /// Called once training starts, with the per-stage stats when the engine has stages.
    pub on_start: Option<Box<dyn FnOnce(Option<StatsReader>) + 'a>>,
}

impl<'a> Job<'a> {
    /// Trains `cfg` with nothing written, exported or hooked.
    pub fn new(cfg: &'a Config) -> Job<'a> {
        Job {
            cfg,
            folder: None,
            resume: None,
            metrics: None,
            registry: None,
            cancel: None,
            on_start: None,
        }
    }

    /// Calls the start hook, once.
    pub fn started(&mut self, stats: Option<StatsReader>) {
        if let Some(hook) = self.on_start.take() {
            hook(stats);
        }
    }
}

/// What an engine trained: the same for every engine.
#[derive(Debug)]
pub struct Trained {
    /// The final student (the best checkpoint after a guard roll-back).
    pub student: Model,
    pub steps: usize,
    /// Every epoch, a resumed run's earlier ones included (those without timing).
    pub epochs: Vec<EpochRecord>,
    /// The test-set evaluations, a resumed run's earlier ones included.
    pub evals: Vec<EvalRecord>,
    /// Validation findings: the best checkpoint and the guard (None without a validation split).
    pub selection: Option<SelectionHandle>,
    /// The per-stage figures of an engine with stages (the pipeline).
    pub stages: Option<RunSummary>,
}

impl Trained {
    /// The per-stage figures of the summary (none for an engine without stages).
    pub fn stage_reports(&self) -> Vec<StageReport> {
        let Some(summary) = &self.stages else {
            return Vec::new();
        };
        let wall = summary.wall.as_secs_f64();
        summary
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
            .collect()
    }
}

/// A training engine: the sequential trainer or the stage pipeline.
pub trait Engine {
    /// The engine's name in the summary and on the command line.
    fn name(&self) -> &'static str;

    /// Trains as `job` says, up to the final evaluation; the end of the run
    /// is [`Engine::train`]'s.
    fn fit(&self, job: Job<'_>) -> Result<Trained>;

    /// [`Engine::fit`], then the end every engine shares: the roll-back to
    /// the best checkpoint after a guard stop, then the final weights.
    fn train(&self, job: Job<'_>) -> Result<Trained> {
        let (cfg, folder) = (job.cfg, job.folder.cloned());
        let trained = self.fit(job)?;
        if let Some(selection) = &trained.selection {
            selection.roll_back(&trained.student)?;
        }
        if let Some(folder) = &folder {
            folder.save_model(RunFile::FinalWeights, &trained.student)?;
        }
        if let Some(path) = &cfg.run.save_final {
            trained.student.save(path)?;
        }
        Ok(trained)
    }
}
