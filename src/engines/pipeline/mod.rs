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
use crate::models::Model;
use crate::train::{
    Context, Engine, EvalRecord, EvalSchedule, Job, Parts, Recorder, Records, RunFile, RunFolder,
    SelectionHandle, Trained,
};
use ard_actors::{ComputeLane, Emitter, PipelineBuilder, PipelineOptions, StageError};
use std::time::Duration;

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

/// The pipeline engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pipeline;

impl Engine for Pipeline {
    fn name(&self) -> &'static str {
        "pipeline"
    }

    /// Trains on the five-stage pipeline, continuing from `job.resume` when
    /// given; cancelling `job.cancel` stops it after a checkpoint.
    fn fit(&self, job: Job<'_>) -> Result<Trained> {
        let (ctx, parts) = Context::build(&job)?;
        // With a complete soft-label cache the teacher never runs: its cores go to the attack and the student.
        let has_teacher = parts.teacher.is_some() && !parts.soft_labels.is_complete();
        let threads = ThreadPlan::for_run(job.cfg, ctx.device, has_teacher);
        // The shared compute lane, when the plan asks for one: served by this
        // thread (which builds the models; see `ard_actors::lane`).
        let (lane, lane_server) = threads
            .lane
            .map(|n| {
                crate::device::set_this_threads_intra_op(n);
                ComputeLane::on_this_thread("compute")
            })
            .unzip();
        let built = build(&job, &ctx, parts, threads, lane)?;
        run(job, ctx.device, built, lane_server)
    }
}

/// The teacher of `cfg`, loaded for a stage that needs its own copy.
fn load_teacher(cfg: &Config, device: tch::Device) -> Result<Model> {
    let path = cfg
        .teacher
        .weights
        .as_ref()
        .ok_or_else(|| Error::Setting("the teacher stage needs teacher.weights".into()))?;
    Model::load(cfg.teacher.arch, device, path)
}

/// The models the attack and eval stages own beside the student.
struct SideModels {
    /// The attack's replica of the student.
    replica: Model,
    /// The teacher, when the attack targets it.
    attack_teacher: Option<Model>,
    /// The teacher, when an evaluation or the validator needs it.
    eval_teacher: Option<Model>,
    /// The eval stage's model, loaded from each snapshot.
    eval_model: Model,
}

impl SideModels {
    fn build(cfg: &Config, ctx: &Context, parts: &Parts) -> Result<SideModels> {
        let (device, perf) = (ctx.device, &ctx.perf);
        let mut replica = Model::new(cfg.student.arch, device);
        replica.copy_weights_from(&parts.student)?;
        // channels-last and/or bf16 as [perf] asks (the student was prepared by Setup).
        perf.prepare_attack_replica(&mut replica);
        let attack_teacher = match cfg.attack.target {
            AttackTarget::Teacher => Some(load_teacher(cfg, device)?),
            AttackTarget::Student => None,
        };
        let eval_needs_teacher = parts
            .test
            .evals
            .contains(&crate::eval::EvalAttack::TrainAttack)
            || parts.validator.as_ref().is_some_and(|v| v.needs_teacher());
        let eval_teacher = match (cfg.attack.kind, parts.teacher.is_some()) {
            (crate::config::AttackKind::KlPgd, true) if eval_needs_teacher => {
                Some(load_teacher(cfg, device)?)
            }
            _ => None,
        };
        let mut eval_model = Model::new(cfg.student.arch, device);
        perf.prepare(&mut eval_model);
        Ok(SideModels {
            replica,
            attack_teacher,
            eval_teacher,
            eval_model,
        })
    }
}

/// The five stages of a run, and what the run reads back once they end.
struct Built {
    data: data::DataStage,
    teacher: teacher::TeacherStage,
    attack: attack::AttackStage,
    student: student::StudentStage,
    eval: eval::EvalStage,
    /// The student's published weights (the newest wins).
    latest_weights: attack::WeightBoard,
    layout: weights::WeightLayout,
    recorder: Recorder,
    selection: Option<SelectionHandle>,
}

/// Builds the stages of `job` from the run's parts.
fn build(
    job: &Job<'_>,
    ctx: &Context,
    parts: Parts,
    threads: ThreadPlan,
    lane: Option<ComputeLane>,
) -> Result<Built> {
    let cfg = job.cfg;
    let models = SideModels::build(cfg, ctx, &parts)?;
    let Parts {
        train,
        test,
        student,
        teacher,
        update,
        soft_labels,
        validator,
    } = parts;
    // Validation (best checkpoint) and the overfitting guard run in the eval
    // stage; the guard stops training through the data stage.
    let selection = validator.as_ref().map(|v| v.handle());
    let stop = validator.as_ref().map(|v| v.stop_flag());
    let board = attack::WeightBoard::new();
    let layout = weights::WeightLayout::of(&student);
    // A resumed run carries its finished epochs and recorded evaluations over.
    let recorder =
        Recorder::new(job.folder.cloned(), job.metrics.cloned()).training(cfg, job.resume)?;
    let schedule = test.schedule();
    let catch_up = missed_evaluation(job, &recorder.log().evals, &layout, schedule, ctx.device)?;
    let compute = |n| Compute::new(n, lane.clone());
    let data = data_stage(cfg, ctx, train, threads.data)?.stopping_on(stop);
    let teacher = teacher::TeacherStage::new(teacher, soft_labels, compute(threads.teacher));
    let attack = attack::AttackStage::for_run(
        cfg,
        models.replica,
        board.clone(),
        compute(threads.attack),
        models.attack_teacher,
        job.metrics.cloned(),
    )
    .with_amp(ctx.perf.amp);
    let outputs = student::StudentOutputs {
        board: board.clone(),
        recorder: recorder.clone(),
        eval_plan: schedule,
    };
    let student_stage =
        student::StudentStage::for_run(ctx, student, update, compute(threads.student), outputs)?
            .with_catch_up(catch_up);
    let eval = eval::EvalStage::new(
        models.eval_model,
        models.eval_teacher,
        test,
        compute(threads.eval),
        recorder.clone(),
    )
    .with_validator(validator)
    .off_the_clock_of(ctx.budget.clone());
    Ok(Built {
        data,
        teacher,
        attack,
        student: student_stage,
        eval,
        latest_weights: board,
        layout,
        recorder,
        selection,
    })
}

/// The data stage of `cfg`'s run, from where `ctx` starts, within its budget.
fn data_stage(
    cfg: &Config,
    ctx: &Context,
    train: crate::data::Split,
    threads: usize,
) -> Result<data::DataStage> {
    let (seed, epochs) = (cfg.run.seed, cfg.train.epochs);
    let stage = data::DataStage::new(
        train,
        cfg.data.clone(),
        seed,
        ctx.device,
        epochs,
        ctx.total_steps,
    );
    Ok(stage
        .with_threads(threads)
        .with_view_set(crate::soft_labels::identity::view_set(cfg)?)
        .starting_at(&ctx.start)
        .within(ctx.budget.clone()))
}

/// Runs the built stages to their end; the student's last published
/// weights are the result.
fn run(
    mut job: Job<'_>,
    device: tch::Device,
    built: Built,
    lane_server: Option<ard_actors::LaneServer>,
) -> Result<Trained> {
    let cfg = job.cfg;
    let options = PipelineOptions {
        stall_timeout: cfg
            .pipeline
            .stall_timeout_s
            .map(|s| Duration::from_secs_f64(s.get())),
        const_labels: crate::metrics::registry::const_labels(&cfg.run.name),
        cancel: job.cancel.cloned(),
        ..Default::default()
    };
    let private = prometheus::Registry::new();
    let cap = cfg.pipeline.queue_capacity;
    let Built {
        data,
        teacher,
        attack,
        student: student_stage,
        eval,
        latest_weights,
        layout,
        recorder,
        selection,
    } = built;
    let handle = PipelineBuilder::new(job.registry.unwrap_or(&private), options)
        .and_then(|b| b.source(data, cap))
        .and_then(|c| c.stage(teacher, cap))
        .and_then(|c| c.stage(attack, cap))
        .and_then(|c| c.stage(student_stage, 1))
        .and_then(|c| c.sink(eval))
        .and_then(|c| c.run())
        .map_err(Error::from_pipeline)?;
    job.started(Some(handle.stats_reader()));
    let joined = match lane_server {
        Some(server) => handle.join_serving(server),
        None => handle.join(),
    };
    let summary = joined.map_err(|e| {
        // Keep the newest consistent weights the student published: a
        // cancelled or failed run loses at most the step in flight.
        if let Some(folder) = job.folder {
            keep_latest(folder, cfg, device, &latest_weights, &layout);
        }
        Error::from_pipeline(e)
    })?;
    // The student's final weights: the last version it published.
    let student = Model::new(cfg.student.arch, device);
    latest_weights
        .read_latest_with(|_, w| layout.load(&student, w))
        .map_err(|e| Error::invalid("the student's final weights", e.to_string()))?
        .ok_or_else(|| Error::invalid("the student stage", "it published no weights"))??;
    let Records { epochs, evals } = recorder.log();
    Ok(Trained {
        student,
        steps: epochs.iter().map(|e| e.steps).sum(),
        epochs,
        evals,
        selection,
        stages: Some(summary),
    })
}

/// Saves the newest weights on `board` as the run's last weights (a
/// failed or cancelled run), logging what it did.
fn keep_latest(
    folder: &RunFolder,
    cfg: &Config,
    device: tch::Device,
    board: &attack::WeightBoard,
    layout: &weights::WeightLayout,
) {
    let path = folder.file(RunFile::LastWeights);
    let saved = board.read_latest_with(|version, w| -> Result<u64> {
        let model = Model::new(cfg.student.arch, device);
        layout.load(&model, w)?;
        folder.save_model(RunFile::LastWeights, &model)?;
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

/// The evaluation a resumed run owes: the last finished epoch's, when it was
/// due and the run stopped before its record was written (a second signal
/// exits at once, while the eval stage still works on it). That epoch's
/// weights are the run folder's last weights (written at each epoch end), so it is
/// evaluated from them before training goes on. The run's final epoch is the
/// student stage's `finish` to evaluate.
fn missed_evaluation(
    job: &Job<'_>,
    recorded: &[EvalRecord],
    layout: &weights::WeightLayout,
    schedule: EvalSchedule,
    device: tch::Device,
) -> Result<Option<messages::Snapshot>> {
    let (cfg, Some(checkpoint), Some(dir)) = (job.cfg, job.resume, job.folder) else {
        return Ok(None);
    };
    let epoch = checkpoint.state.epochs.len();
    let last = dir.file(RunFile::LastWeights);
    if !schedule.due(epoch, false)
        || epoch >= cfg.train.epochs
        || recorded.iter().any(|r| r.epoch == epoch)
        || !last.is_file()
    {
        return Ok(None);
    }
    log::warn!(
        "epoch {epoch}'s evaluation is missing from {} (the run stopped before writing it): evaluating {} first",
        RunFile::EvalLog,
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
