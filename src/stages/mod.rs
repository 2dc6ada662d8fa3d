//! The five ARD stages on the `ard-actors` runtime:
//! data → teacher → attack → student → eval, over bounded queues.
//!
//! - [`data`]: CIFAR-10 batches with reproducible augmentation views;
//! - [`teacher`]: teacher logits on the clean batch;
//! - [`attack`]: the configured attack on a replica of the student;
//! - [`student`]: loss, SGD step, weights published back to the attack;
//! - [`eval`]: snapshots evaluated off the critical path.
//!
//! At `pipeline.max_weight_staleness = 0` the pipeline computes exactly what
//! the sequential trainer computes (a test holds it to that).

pub mod attack;
pub mod data;
pub mod eval;
pub mod messages;
pub mod student;
pub mod teacher;
pub mod weights;

use crate::config::{AttackTarget, Config};
use crate::error::{Error, Result};
use crate::metrics::TrainMetrics;
use crate::models::Model;
use crate::train::context::{EvalSchedule, RunContext, RunParts};
use crate::train::recorder::{Recorder, RunLog};
use crate::train::records::EpochRecord;
use crate::train::RunDir;
use ard_actors::{
    CancelToken, ComputeLane, Emitter, PipelineBuilder, PipelineOptions, RunSummary, StageError,
    StatsReader,
};
use std::time::Duration;

pub use crate::train::records::{EpochTrainStats, EvalRecord};

/// The stage names, in pipeline order.
pub const STAGES: [&str; 5] = ["data", "teacher", "attack", "student", "eval"];

/// Intra-op threads per stage, and whether the teacher, attack and student
/// compute on one shared lane (`pipeline.compute`, [`ComputePlacement`]).
///
/// Shared (the CPU default): the lane takes every core (or `run.threads`)
/// and the stages' own threads do only bookkeeping (one thread each), so
/// compute never has more threads than cores. On a CPU an intra-op team
/// belongs to the thread that starts it: with a team per stage the process
/// held more compute threads than cores, OpenMP stopped spinning between
/// operations, and the pipeline's epoch took 1.15-1.3x the sequential
/// trainer's (docs/src/performance.md).
///
/// Per stage: at staleness 0 the attack and the student alternate (each
/// waits for the other), so each takes every core; the teacher runs ahead
/// beside them on half the cores. At staleness 1 the attack and the student
/// overlap and share what the teacher leaves. Data and eval take one thread
/// each either way.
#[derive(Debug, Clone, Copy)]
pub struct ThreadPlan {
    pub data: usize,
    pub teacher: usize,
    pub attack: usize,
    pub student: usize,
    pub eval: usize,
    /// Threads of the shared compute lane; None: each stage computes itself.
    pub lane: Option<usize>,
}

impl ThreadPlan {
    pub fn for_run(cfg: &Config, device: tch::Device, has_teacher: bool) -> ThreadPlan {
        let cores = cfg.run.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        if cfg.pipeline.compute.shared_on(device) {
            return ThreadPlan {
                data: 1,
                teacher: 1,
                attack: 1,
                student: 1,
                eval: 1,
                lane: Some(cores),
            };
        }
        if cfg.run.threads.is_some() {
            // An explicit count is used by every stage (e.g. 1 for bitwise-reproducible runs).
            return ThreadPlan {
                data: 1,
                teacher: cores,
                attack: cores,
                student: cores,
                eval: cores,
                lane: None,
            };
        }
        let teacher = if has_teacher { (cores / 2).max(1) } else { 1 };
        let main = if cfg.pipeline.max_weight_staleness == 0 {
            cores
        } else {
            cores
                .saturating_sub(if has_teacher { teacher } else { 0 })
                .max(1)
        };
        ThreadPlan {
            data: 1,
            teacher,
            attack: main,
            student: main,
            eval: 1,
            lane: None,
        }
    }
}

/// Where a stage runs its tensor work: its own thread, or the shared compute
/// lane. The stage's thread itself always gets its intra-op thread count
/// (bookkeeping such as weight snapshots and checkpoints runs there), set
/// the first time it runs (libtorch's setting is per thread).
pub struct Compute {
    threads: usize,
    applied: bool,
    lane: Option<ComputeLane>,
}

impl Compute {
    pub fn new(threads: usize, lane: Option<ComputeLane>) -> Self {
        Compute {
            threads,
            applied: false,
            lane,
        }
    }

    /// Whether this stage computes on the shared lane (where the others wait for it).
    pub fn shares_the_lane(&self) -> bool {
        self.lane.is_some()
    }

    /// Sets the stage thread's libtorch thread count, once (call first in every handle).
    pub fn enter(&mut self) {
        if !self.applied {
            crate::device::set_this_threads_intra_op(self.threads);
            self.applied = true;
        }
    }

    /// Runs `job` where this stage computes. On the lane, the wait for other
    /// stages' jobs is recorded as idle time (see [`Emitter::on_lane`]).
    pub fn run<R: Send, O: Send + 'static>(
        &mut self,
        out: &mut Emitter<O>,
        job: impl FnOnce() -> R + Send,
    ) -> std::result::Result<R, StageError> {
        self.enter();
        match &self.lane {
            Some(lane) => out.on_lane(lane, job),
            None => Ok(job()),
        }
    }
}

/// What a finished pipeline run reports.
#[derive(Debug)]
pub struct PipelineOutcome {
    pub summary: RunSummary,
    pub epochs: Vec<EpochTrainStats>,
    pub evals: Vec<EvalRecord>,
    /// The student's final variables in [`weights::WeightLayout`] order.
    pub final_weights: Vec<tch::Tensor>,
    pub student: Model,
    /// Validation findings: the best checkpoint and the guard (None without a validation split).
    pub selection: Option<crate::train::validation::SelectionHandle>,
}

/// What a caller may add to a pipeline run: hooks, and a checkpoint to resume.
#[derive(Default)]
pub struct RunOptions {
    /// Called once the pipeline runs, with its stats reader (for /status).
    pub on_start: Option<Box<dyn FnOnce(StatsReader)>>,
    /// Stops the run (after a checkpoint) when cancelled: the same token
    /// stops the sequential engine.
    pub cancel: Option<CancelToken>,
    /// Continue from this training checkpoint (see [`crate::train::resume`]).
    pub resume: Option<crate::train::resume::Checkpoint>,
}

/// Runs the configured training on the five-stage pipeline.
pub fn run_pipeline(
    cfg: &Config,
    run_dir: Option<&RunDir>,
    registry: &prometheus::Registry,
    metrics: Option<TrainMetrics>,
    run_options: RunOptions,
) -> Result<PipelineOutcome> {
    let (
        ctx,
        RunParts {
            train,
            test,
            student,
            teacher,
            update,
            soft_labels,
            validator,
        },
    ) = RunContext::build(cfg, run_dir, run_options.resume.as_ref(), metrics.clone())?;
    let (device, total, budget) = (ctx.device, ctx.total_steps, ctx.budget.clone());
    // With a complete soft-label cache the teacher never runs: its cores go to the attack and the student.
    let threads = ThreadPlan::for_run(cfg, device, teacher.is_some() && !soft_labels.is_complete());
    // The shared compute lane, when the plan asks for one: served by this
    // thread (which builds the models; see `ard_actors::lane`).
    let (lane, lane_server) = threads
        .lane
        .map(|n| {
            crate::device::set_this_threads_intra_op(n);
            ComputeLane::on_this_thread("compute")
        })
        .unzip();
    let load_teacher = || -> Result<Model> {
        let path = cfg
            .teacher
            .weights
            .as_ref()
            .ok_or_else(|| Error::Setting("the teacher stage needs teacher.weights".into()))?;
        Model::load(cfg.teacher.arch, device, path)
    };
    let perf = ctx.perf;
    let mut replica = Model::new(cfg.student.arch, device);
    replica.copy_weights_from(&student)?;
    // channels-last and/or bf16 as [perf] asks (the student was prepared by RunSetup).
    perf.prepare_attack_replica(&mut replica);
    let attack_teacher = match cfg.attack.target {
        AttackTarget::Teacher => Some(load_teacher()?),
        AttackTarget::Student => None,
    };
    // Issue 6: validation (best checkpoint) and the overfitting guard run in
    // the eval stage; the guard stops training through the data stage.
    let selection = validator.as_ref().map(|v| v.handle());
    let stop = validator.as_ref().map(|v| v.stop_flag());
    let eval_teacher = match (cfg.attack.kind, teacher.is_some()) {
        (crate::config::AttackKind::KlPgd, true)
            if test.evals.contains(&crate::eval::EvalAttack::TrainAttack)
                || validator.as_ref().is_some_and(|v| v.needs_teacher()) =>
        {
            Some(load_teacher()?)
        }
        _ => None,
    };
    let mut eval_model = Model::new(cfg.student.arch, device);
    perf.prepare(&mut eval_model);

    let board = attack::WeightBoard::new();
    let latest_weights = board.clone();
    let layout = weights::WeightLayout::of(&student);
    // A resumed run carries its finished epochs and recorded evaluations over.
    let recorder =
        Recorder::new(run_dir.cloned(), metrics.clone()).training(cfg, run_options.resume.as_ref());
    let schedule = test.schedule();
    let catch_up = match (&run_options.resume, run_dir) {
        (Some(c), Some(dir)) => {
            let recorded = recorder.log().evals;
            missed_evaluation(cfg, c, dir, &recorded, &layout, schedule, device)?
        }
        _ => None,
    };

    let data_stage = data::DataStage::new(
        train,
        cfg.data.clone(),
        cfg.run.seed,
        device,
        cfg.train.epochs,
        total,
        threads.data,
    )
    .with_view_set(crate::soft_labels::identity::view_set(cfg)?)
    .starting_at(&ctx.start)
    .within(budget.clone())
    .stopping_on(stop);
    let teacher_stage = teacher::TeacherStage::new(
        teacher,
        soft_labels,
        Compute::new(threads.teacher, lane.clone()),
    );
    let attack_stage = attack::AttackStage::for_run(
        cfg,
        replica,
        board.clone(),
        Compute::new(threads.attack, lane.clone()),
        attack_teacher,
        metrics.clone(),
    )
    .with_amp(perf.amp);
    let student_stage = student::StudentStage::for_run(
        &ctx,
        student,
        update,
        board,
        Compute::new(threads.student, lane.clone()),
        recorder.clone(),
        schedule,
    )?
    .with_catch_up(catch_up);
    let eval_stage = eval::EvalStage::new(
        eval_model,
        eval_teacher,
        test,
        Compute::new(threads.eval, lane),
        recorder.clone(),
    )
    .with_validator(validator)
    .off_the_clock_of(budget);

    let options = PipelineOptions {
        stall_timeout: cfg
            .pipeline
            .stall_timeout_s
            .map(|s| Duration::from_secs_f64(s.get())),
        const_labels: crate::metrics::registry::const_labels(&cfg.run.name),
        cancel: run_options.cancel.clone(),
        ..Default::default()
    };
    let cap = cfg.pipeline.queue_capacity;
    let pipeline_err = Error::from_pipeline;
    let build = || {
        PipelineBuilder::new(registry, options)?
            .source(data_stage, cap)?
            .stage(teacher_stage, cap)?
            .stage(attack_stage, cap)?
            .stage(student_stage, 1)?
            .sink(eval_stage)?
            .run()
    };
    let handle = build().map_err(pipeline_err)?;
    if let Some(on_start) = run_options.on_start {
        on_start(handle.stats_reader());
    }
    let joined = match lane_server {
        Some(server) => handle.join_serving(server),
        None => handle.join(),
    };
    let summary = match joined {
        Ok(summary) => summary,
        Err(e) => {
            // Keep the newest consistent weights the student published: a
            // cancelled or failed run loses at most the step in flight.
            if let Some(dir) = run_dir {
                let path = dir.file("last.safetensors");
                let saved = latest_weights.read_latest_with(|version, w| -> Result<u64> {
                    let model = Model::new(cfg.student.arch, device);
                    layout.load(&model, w)?;
                    model.save(&path)?;
                    Ok(version)
                });
                match saved {
                    Ok(Some(Ok(version))) => log::warn!(
                        "saved the weights after step {version} to {}",
                        path.display()
                    ),
                    Ok(Some(Err(save))) => log::error!("could not save {}: {save}", path.display()),
                    _ => {}
                }
            }
            return Err(pipeline_err(e));
        }
    };
    // The student's final weights: the last version it published.
    let student = Model::new(cfg.student.arch, device);
    latest_weights
        .read_latest_with(|_, w| layout.load(&student, w))
        .map_err(|e| Error::invalid("the student's final weights", e.to_string()))?
        .ok_or_else(|| Error::invalid("the student stage", "it published no weights"))??;
    let mut final_weights = layout.snapshot(&student);
    if let Some(selection) = &selection {
        // After a guard stop the final result is the best checkpoint.
        let paths = recorder.final_weights_paths();
        if selection.roll_back(&student, &paths)?.is_some() {
            final_weights = weights::WeightLayout::of(&student).snapshot(&student);
        }
    }
    let RunLog { epochs, evals } = recorder.log();
    Ok(PipelineOutcome {
        summary,
        epochs: epochs.iter().map(EpochRecord::stats).collect(),
        evals,
        final_weights,
        student,
        selection,
    })
}

/// The evaluation a resumed run owes: the last finished epoch's, when it was
/// due and the run stopped before its record was written (a second signal
/// exits at once, while the eval stage still works on it). That epoch's
/// weights are in `last.safetensors` (written at each epoch end), so it is
/// evaluated from them before training goes on. The run's final epoch is the
/// student stage's `finish` to evaluate.
fn missed_evaluation(
    cfg: &Config,
    checkpoint: &crate::train::resume::Checkpoint,
    dir: &RunDir,
    recorded: &[EvalRecord],
    layout: &weights::WeightLayout,
    schedule: EvalSchedule,
    device: tch::Device,
) -> Result<Option<messages::Snapshot>> {
    let epoch = checkpoint.state.epochs.len();
    let last = dir.file(crate::train::recorder::LAST_WEIGHTS);
    if !schedule.due(epoch, false)
        || epoch >= cfg.train.epochs
        || recorded.iter().any(|r| r.epoch == epoch)
        || !last.is_file()
    {
        return Ok(None);
    }
    log::warn!(
        "epoch {epoch}'s evaluation is missing from eval.jsonl (the run stopped before writing it): evaluating {} first",
        last.display()
    );
    let model = Model::load(cfg.student.arch, device, &last)?;
    Ok(Some(messages::Snapshot {
        epoch,
        step: checkpoint.state.epochs.iter().map(|e| e.steps).sum(),
        last: false,
        weights: layout.snapshot(&model),
        eval_images: schedule.images,
    }))
}
