//! A run's setup, the same for both engines: [`Setup`] reads the data and
//! builds the models; [`Context::build`] adds what a run shares (device,
//! run folder, start position, step count, time budget, evaluations) and
//! hands over the parts an engine owns ([`Parts`]: models, data, the
//! student's update, the soft-label source, the validator).

use super::budget::TimeBudget;
use super::engine::Job;
use super::resume::TrainPosition;
use super::step::StudentUpdate;
use super::validation::Validator;
use crate::config::Config;
use crate::config::{AttackConfig, AttackKind, AttackTarget, SoftLabels};
use crate::data::{self, SplitKind};
use crate::distill::{GradScaler, Schedule, Sgd};
use crate::error::{Error, Result};
use crate::eval::{EvalAttack, EvalReport, EvalSet, Evaluation};
use crate::models::Model;
use crate::perf::Perf;
use crate::soft_labels::SoftLabelSource;
use std::sync::Arc;
use tch::Device;

/// Everything a run needs, built from the config (models loaded, data read).
pub struct Setup {
    pub device: Device,
    /// `[perf]`, checked against the device.
    pub perf: Perf,
    pub train: data::Split,
    /// The held-out validation split (`data.validation_images`), never trained on.
    pub validation: data::Split,
    pub test: EvalSet,
    pub student: Model,
    pub teacher: Option<Model>,
}

impl Setup {
    /// Checks paths and devices, reads the data and builds the models.
    pub fn build(cfg: &Config) -> Result<Setup> {
        let device = crate::device::resolve_device(&cfg.run.device)?;
        // [perf]: checked against the device; process settings before any threads start.
        let mut perf = cfg.perf.build(device)?;
        if cfg.attack.kind == AttackKind::None || cfg.attack.target == AttackTarget::Teacher {
            // No attack on the student: no bf16 copy of it for one.
            perf.attack_kind = None;
        }
        if cfg.teacher.soft_labels != SoftLabels::Online
            || cfg.attack.target != AttackTarget::Student
        {
            // An attack on the teacher runs on it in f32; a cache is filled by
            // the f32 teacher (below).
            perf.teacher_kind = None;
        }
        crate::perf::configure_process(cfg);
        tch::manual_seed(cfg.run.seed as i64);
        data::ensure_cifar10(&cfg.data)?;
        let (train, validation) = data::validation::load_train_and_validation(&cfg.data)?;
        let mut test = data::load_split(&cfg.data.root, SplitKind::Test, cfg.data.checksums)?;
        if let Some(n) = cfg.eval.test_limit.or(cfg.data.test_limit) {
            test = test.prefix(n);
        }
        let test = EvalSet::from_split(&test)?;
        let mut student = match &cfg.student.init {
            Some(path) => Model::load(cfg.student.arch, device, path)?,
            None => Model::new(cfg.student.arch, device),
        };
        perf.prepare(&mut student);
        let needs_teacher = cfg.loss.build().needs_teacher();
        let mut teacher = match (&cfg.teacher.weights, needs_teacher) {
            (Some(path), true) => Some(Model::load(cfg.teacher.arch, device, path)?),
            (None, true) => {
                return Err(Error::Setting(format!(
                    "the {} loss needs a teacher: set teacher.weights to a safetensors checkpoint",
                    crate::config::spelled(&cfg.loss.kind)
                )))
            }
            (_, false) => None,
        };
        // Not for a cache: it holds what the plain f32 (NCHW) teacher
        // computes, whether `soft-labels` filled it or a run's misses did.
        let online = cfg.teacher.soft_labels == SoftLabels::Online;
        if let Some(t) = teacher.as_mut().filter(|_| online) {
            perf.prepare_online_teacher(t);
        }
        Ok(Setup {
            device,
            perf,
            train,
            validation,
            test,
            student,
            teacher,
        })
    }
}

/// Number of optimisation steps of a run: epochs × batches, capped by `max_steps`.
pub fn total_steps(cfg: &Config, train_len: usize) -> usize {
    let per_epoch = train_len.div_ceil(cfg.data.batch_size);
    let all = per_epoch * cfg.train.epochs;
    cfg.train.max_steps.map_or(all, |m| m.min(all))
}

/// Parsed `eval.attacks`.
pub fn eval_attacks(cfg: &Config) -> Result<Vec<EvalAttack>> {
    cfg.eval
        .attacks
        .iter()
        .map(|a| EvalAttack::parse(a).map_err(|e| Error::Setting(format!("eval.attacks: {e}"))))
        .collect()
}

/// What a run shares, whichever engine trains it.
pub struct Context {
    pub device: Device,
    /// `[perf]`, checked against the device.
    pub perf: Perf,
    /// Where training starts (the checkpoint's position, or the beginning).
    pub start: TrainPosition,
    pub total_steps: usize,
    /// `train.max_seconds`, with a resumed run's seconds already spent.
    pub budget: Option<Arc<TimeBudget>>,
}

/// The run's test-set evaluation: the set, `eval.attacks` and their settings.
pub struct TestPlan {
    pub set: EvalSet,
    /// `eval.attacks`, parsed (empty: no test-set evaluation).
    pub evals: Vec<EvalAttack>,
    pub train_attack: AttackConfig,
    pub batch_size: usize,
    pub seed: u64,
    /// `eval.every_epochs` (0: after the last epoch only).
    pub every_epochs: usize,
}

/// When the test set is evaluated, and on how many images: the one rule both
/// engines (and a resumed run's catch-up) follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvalSchedule {
    /// `eval.every_epochs` (0: after the last epoch only).
    pub every_epochs: usize,
    /// Test images per evaluation (0: no test-set evaluation).
    pub images: u64,
}

impl EvalSchedule {
    /// Whether the student after `epoch` (1-based) is evaluated: every
    /// `every_epochs` epochs and after the run's `last` one.
    pub fn due(&self, epoch: usize, last: bool) -> bool {
        self.images > 0
            && (last
                || (self.every_epochs > 0 && epoch > 0 && epoch.is_multiple_of(self.every_epochs)))
    }

    /// The images to evaluate the student after `epoch` on (0: none).
    pub fn images_after(&self, epoch: usize, last: bool) -> u64 {
        if self.due(epoch, last) {
            self.images
        } else {
            0
        }
    }
}

impl TestPlan {
    /// `model` on the test set under every evaluation; `teacher` only for a
    /// teacher-based training attack (kl_pgd).
    pub fn evaluate(&self, model: &Model, teacher: Option<&Model>) -> Result<EvalReport> {
        Evaluation {
            model,
            set: &self.set,
            evals: &self.evals,
            train_attack: &self.train_attack,
            batch_size: self.batch_size,
            seed: self.seed,
            teacher,
        }
        .report()
    }

    /// When this plan runs, and on how many images.
    pub fn schedule(&self) -> EvalSchedule {
        EvalSchedule {
            every_epochs: self.every_epochs,
            images: if self.evals.is_empty() {
                0
            } else {
                self.set.images.size()[0] as u64
            },
        }
    }
}

/// What an engine owns of a run.
pub struct Parts {
    pub train: data::Split,
    pub test: TestPlan,
    /// Restored from the checkpoint when resuming.
    pub student: Model,
    pub teacher: Option<Model>,
    /// The loss, the optimiser (restored), the schedule and the budget.
    pub update: StudentUpdate,
    pub soft_labels: SoftLabelSource,
    /// Validation split, best checkpoint and overfitting guard (None without a validation split).
    pub validator: Option<Validator>,
}

impl Context {
    /// Reads the data, builds the models, restores `job.resume`, and sets up
    /// the soft labels (counted in `job.metrics`) and the validator.
    pub fn build(job: &Job<'_>) -> Result<(Context, Parts)> {
        let (cfg, resume, metrics) = (job.cfg, job.resume, job.metrics.cloned());
        let Setup {
            device,
            perf,
            train,
            validation,
            test,
            mut student,
            teacher,
        } = Setup::build(cfg)?;
        let total = total_steps(cfg, train.len());
        let mut sgd = Sgd::from_config(&student.vs, &cfg.optim);
        let start = match resume {
            Some(c) => {
                c.restore(&mut student, &mut sgd)?;
                c.state.position.clone()
            }
            None => TrainPosition::default(),
        };
        let budget = cfg
            .train
            .max_seconds
            .map(|limit| Arc::new(TimeBudget::new(limit.get(), start.train_seconds)));
        let update = StudentUpdate {
            objective: cfg.loss.build(),
            sgd,
            schedule: Schedule::new(&cfg.optim, total),
            clean_forward_no_grad: cfg.perf.clean_forward_without_graph(),
            scaler: cfg.perf.amp.then(GradScaler::default),
            budget: budget.clone(),
            compute_copy: perf.student_copy(&student)?,
        };
        let mut soft_labels = SoftLabelSource::for_run(cfg, &train, teacher.is_some(), metrics)?;
        if device.is_cuda() {
            soft_labels.keep_on_device(device)?;
        }
        let validator =
            Validator::for_run(cfg, &validation, job.folder, resume.map(|_| start.epoch))?;
        let ctx = Context {
            device,
            perf,
            start,
            total_steps: total,
            budget,
        };
        let parts = Parts {
            train,
            test: TestPlan {
                set: test,
                evals: eval_attacks(cfg)?,
                train_attack: cfg.attack.clone(),
                batch_size: cfg.data.batch_size,
                seed: cfg.run.seed,
                every_epochs: cfg.eval.every_epochs,
            },
            student,
            teacher,
            update,
            soft_labels,
            validator,
        };
        Ok((ctx, parts))
    }
}
