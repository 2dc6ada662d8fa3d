//! The sequential trainer: one thread, one step after the other. It is the
//! semantic reference of the actor pipeline, and the engine of
//! `ard-pipeline run --engine sequential`.

use super::run_dir::RunDir;
use super::step::{adversarial_batch, attack_key, StudentUpdate};
use crate::config::{AttackTarget, Config};
use crate::data::{self, SplitKind};
use crate::distill::{Schedule, Sgd};
use crate::error::{Error, Result};
use crate::eval::{self, EvalAttack, EvalReport, EvalSet};
use crate::models::Model;
use serde::Serialize;
use std::time::Instant;
use tch::Device;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub steps: usize,
    pub mean_loss: f64,
    pub lr: f64,
    pub seconds: f64,
    pub images_per_s: f64,
    pub eval: Option<EvalReport>,
}

/// What a finished run reports.
#[derive(Debug)]
pub struct TrainOutcome {
    pub student: Model,
    pub steps: usize,
    pub epochs: Vec<EpochRecord>,
    pub wall_s: f64,
}

/// Everything a run needs, built from the config (models loaded, data read).
pub struct RunSetup {
    pub device: Device,
    pub train: data::Split,
    pub test: EvalSet,
    pub student: Model,
    pub teacher: Option<Model>,
}

impl RunSetup {
    /// Checks paths and devices, reads the data and builds the models.
    pub fn build(cfg: &Config) -> Result<RunSetup> {
        let device = crate::device::resolve_device(&cfg.run.device)?;
        crate::device::set_threads(cfg.run.threads);
        tch::manual_seed(cfg.run.seed as i64);
        data::ensure_cifar10(&cfg.data)?;
        let mut train = data::load_split(&cfg.data.root, SplitKind::Train, cfg.data.checksums)?;
        if let Some(n) = cfg.data.train_limit {
            train = train.prefix(n);
        }
        let mut test = data::load_split(&cfg.data.root, SplitKind::Test, cfg.data.checksums)?;
        if let Some(n) = cfg.eval.test_limit.or(cfg.data.test_limit) {
            test = test.prefix(n);
        }
        let test = eval_set(&test)?;
        let student = match &cfg.student.init {
            Some(path) => Model::load(cfg.student.arch, device, path)?,
            None => Model::new(cfg.student.arch, device),
        };
        let needs_teacher = cfg.loss.build().needs_teacher();
        let teacher = match (&cfg.teacher.weights, needs_teacher) {
            (Some(path), true) => Some(Model::load(cfg.teacher.arch, device, path)?),
            (None, true) => {
                return Err(Error::Other(format!(
                "the {:?} loss needs a teacher: set teacher.weights to a safetensors checkpoint",
                cfg.loss.kind
            )))
            }
            (_, false) => None,
        };
        Ok(RunSetup {
            device,
            train,
            test,
            student,
            teacher,
        })
    }
}

/// The whole test split (or its prefix) as tensors, clean.
pub fn eval_set(split: &data::Split) -> Result<EvalSet> {
    let indices: Vec<usize> = (0..split.len()).collect();
    let views = vec![data::View::IDENTITY; indices.len()];
    let batch = data::make_batch(split, &indices, &views, Device::Cpu)?;
    Ok(EvalSet {
        images: batch.images,
        labels: batch.labels,
    })
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
        .map(|a| EvalAttack::parse(a).map_err(Error::Other))
        .collect()
}

/// Trains as configured, one step after the other; `log` receives progress lines.
pub fn train_sequential(
    cfg: &Config,
    run_dir: Option<&RunDir>,
    mut log: impl FnMut(&str),
) -> Result<TrainOutcome> {
    let started = Instant::now();
    let RunSetup {
        device,
        train,
        test,
        student,
        teacher,
    } = RunSetup::build(cfg)?;
    let attack = cfg.attack.build();
    let objective = cfg.loss.build();
    let total = total_steps(cfg, train.len());
    let mut update = StudentUpdate {
        objective,
        sgd: Sgd::from_config(&student.vs, &cfg.optim),
        schedule: Schedule::new(&cfg.optim, total),
    };
    let evals = eval_attacks(cfg)?;
    let seed = cfg.run.seed;
    let view_set = crate::soft_labels::identity::view_set(cfg)?;
    let mut soft_labels =
        crate::soft_labels::SoftLabelSource::for_run(cfg, &train, teacher.is_some(), None)?;
    let mut step = 0usize;
    let mut epochs = Vec::new();
    for epoch in 0..cfg.train.epochs {
        let epoch_start = Instant::now();
        let (mut loss_sum, mut steps_in_epoch, mut images, mut lr) = (0.0, 0usize, 0usize, 0.0);
        let plan = data::EpochPlan::train(&cfg.data, seed, epoch as u64);
        for (indices, views) in data::batches(&train, &plan) {
            if step >= total {
                break;
            }
            let views =
                view_set.training_views(seed, epoch as u64, cfg.data.augment, &indices, views);
            let batch = data::make_batch(&train, &indices, &views, device)?;
            let t = match &teacher {
                Some(t) => {
                    Some(soft_labels.logits(t, &batch.images, &batch.indices, &batch.views)?)
                }
                None => None,
            };
            let attacked = match cfg.attack.target {
                AttackTarget::Student => &student,
                AttackTarget::Teacher => teacher.as_ref().ok_or_else(|| {
                    Error::Other("attack.target = teacher needs a teacher".into())
                })?,
            };
            let x_adv = adversarial_batch(
                attack.as_ref(),
                attacked,
                &batch.images,
                &batch.labels,
                t.as_ref(),
                attack_key(seed, step as u64),
            )?;
            let (loss, step_lr) = update.step(
                &student,
                &batch.images,
                &x_adv,
                &batch.labels,
                t.as_ref(),
                epoch,
                step,
            )?;
            loss_sum += loss;
            lr = step_lr;
            steps_in_epoch += 1;
            images += indices.len();
            step += 1;
        }
        soft_labels.end_epoch()?;
        let seconds = epoch_start.elapsed().as_secs_f64();
        let last = epoch + 1 == cfg.train.epochs || step >= total;
        let due = cfg.eval.every_epochs > 0 && (epoch + 1) % cfg.eval.every_epochs == 0;
        let eval = if (due || last) && !evals.is_empty() {
            Some(eval::evaluate(
                &student,
                &test,
                &evals,
                &cfg.attack,
                cfg.data.batch_size,
                seed,
                teacher.as_ref(),
                |_, _| {},
            )?)
        } else {
            None
        };
        let record = EpochRecord {
            epoch: epoch + 1,
            steps: steps_in_epoch,
            mean_loss: loss_sum / steps_in_epoch.max(1) as f64,
            lr,
            seconds,
            images_per_s: images as f64 / seconds.max(1e-9),
            eval,
        };
        log(&format!(
            "epoch {}/{}: loss {:.5}, lr {:.4}, {:.1} images/s{}",
            record.epoch,
            cfg.train.epochs,
            record.mean_loss,
            record.lr,
            record.images_per_s,
            record
                .eval
                .as_ref()
                .map(|e| format!(", eval {:?}", e.accuracy))
                .unwrap_or_default()
        ));
        if let Some(dir) = run_dir {
            dir.append_jsonl("metrics.jsonl", &record)?;
        }
        epochs.push(record);
        if step >= total {
            break;
        }
    }
    soft_labels.finish()?;
    if let Some(dir) = run_dir {
        student.save(&dir.file("final.safetensors"))?;
    }
    if let Some(path) = &cfg.run.save_final {
        student.save(path)?;
    }
    Ok(TrainOutcome {
        student,
        steps: step,
        epochs,
        wall_s: started.elapsed().as_secs_f64(),
    })
}
