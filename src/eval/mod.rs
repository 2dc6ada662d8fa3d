//! Evaluation: accuracy on clean inputs and under attacks, BatchNorm in eval
//! mode, with no side effect on the model (no parameter gradients, running
//! statistics untouched), plus the edge numbers of a model ([`edge`]) and the
//! `ard-pipeline eval` command ([`command`]).
//!
//! Evaluations, by their names in `eval.attacks` and on the command line
//! (`[_rR]`: R random restarts, later runs only on the points not yet fooled;
//! eps is the run's `attack.eps`):
//!
//! | name               | what                                                             |
//! |--------------------|------------------------------------------------------------------|
//! | `natural`          | clean inputs                                                     |
//! | `train_attack`     | the configured training attack, BatchNorm in eval mode: the paper's robust number (it flatters 1-step training) |
//! | `fgsm`             | one step of eps from x                                           |
//! | `pgdK[_rR]`        | PGD-K on cross-entropy, uniform start, step 2/255 (`pgd20`)      |
//! | `cw[K][_rR]`       | CW-inf: PGD on the CW margin (kappa 50), K = 30 steps by default, step 2/255, uniform start |
//! | `apgd_ce[K][_rR]`  | APGD on cross-entropy, K = 100 iterations by default (Croce & Hein 2020) |
//! | `apgd_dlr[K][_rR]` | APGD on the DLR loss                                             |
//! | `apgd_t[K][_rR]`   | targeted APGD-DLR, 9 target classes (AutoAttack's apgd-t)         |
//! | `fab_t[K]`         | FAB-T: targeted minimal-distortion attack, 9 target classes, K = 100 iterations each, from the clean point (AutoAttack's fab-t) |
//! | `square[K]`        | L-inf Square, score-based (logits only), K = 5000 queries per image by default (AutoAttack's) |
//! | `autoattack`       | AutoAttack, standard version: apgd_ce, apgd_t, fab_t, square as a cascade ([`autoattack`]); the report adds the accuracy after each part, and the model checks' flags ([`checks`]) |
//!
//! Every evaluation runs on every test point and reports its own accuracy
//! ([`Evaluation::masks`]), unless run as AutoAttack's cascade
//! ([`Evaluation::cascade`], `eval --cascade`): each only on the points still
//! right. `worst_case` is AutoAttack-style: a point counts only if the model
//! is right on it clean and under every evaluation run. Random starts come from
//! seeded host noise keyed by (seed, batch offset, evaluation name), so an
//! evaluation's result does not depend on which others run beside it.

pub mod autoattack;
pub mod checks;
pub mod command;
pub mod edge;
pub mod interval;
pub mod output;
pub mod progress;
pub mod record;
pub mod shards;

use crate::attacks::{
    self, predict, Attack, AttackInput, NoiseKey, PartTally, Restarts, APGD_T_TARGETS,
};
use crate::config::{AttackConfig, DataConfig, RandomStart};
use crate::data::SplitKind;
use crate::error::{Error, Result};
use crate::models::Model;
use indexmap::IndexMap;
use interval::Interval;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

pub use autoattack::AutoAttack;
pub use checks::{FlagKind, ModelFlag};
pub use edge::EdgeReport;

/// Noise stream of evaluation attacks (distinct from training's).
const EVAL_STREAM: u64 = 0xE7A1;

/// Step size of `pgdK` and `cw`.
pub const EVAL_STEP: f64 = 2.0 / 255.0;
pub use crate::config::eval_attack::{EvalAttack, APGD_ITERATIONS, CW_STEPS, KNOWN_EVALS};

impl EvalAttack {
    /// The attack to run (None for natural), BatchNorm always in eval mode;
    /// eps is the training attack's.
    pub fn build(&self, train_attack: &AttackConfig) -> Option<Box<dyn Attack>> {
        let eps = train_attack.eps.get();
        Some(match *self {
            EvalAttack::Natural => return None,
            EvalAttack::TrainAttack => {
                let mut cfg = train_attack.clone();
                cfg.bn_mode = crate::config::BnMode::Eval;
                if cfg.kind == crate::config::AttackKind::NFgsm {
                    // N-FGSM trains beyond the eps-ball; evaluated, it stays inside.
                    let (e, step) = (cfg.eps.get(), cfg.step_size.get());
                    return Some(Box::new(
                        attacks::n_fgsm(e, step, cfg.random_start, false).within(e),
                    ));
                }
                cfg.build()
            }
            EvalAttack::Fgsm => Box::new(attacks::fgsm(eps, eps, false)),
            EvalAttack::Pgd { steps, restarts } => Box::new(Restarts {
                inner: attacks::pgd(eps, EVAL_STEP, steps, RandomStart::Uniform, false),
                restarts,
            }),
            EvalAttack::Cw { steps, restarts } => Box::new(Restarts {
                inner: attacks::cw(eps, EVAL_STEP, steps),
                restarts,
            }),
            EvalAttack::ApgdCe {
                iterations,
                restarts,
            } => Box::new(attacks::apgd_ce(eps, iterations, restarts)),
            EvalAttack::ApgdDlr {
                iterations,
                restarts,
            } => Box::new(attacks::apgd_dlr(eps, iterations, restarts)),
            EvalAttack::ApgdT {
                iterations,
                restarts,
            } => Box::new(attacks::apgd_t(eps, iterations, restarts, APGD_T_TARGETS)),
            EvalAttack::FabT { iterations } => Box::new(attacks::fab_t(eps, iterations)),
            EvalAttack::Square { queries } => Box::new(attacks::square(eps, queries)),
            EvalAttack::AutoAttack => Box::new(AutoAttack::standard(eps)),
        })
    }

    /// Whether this evaluation needs teacher logits with `train_attack`.
    pub fn needs_teacher(&self, train_attack: &AttackConfig) -> bool {
        *self == EvalAttack::TrainAttack && train_attack.kind == crate::config::AttackKind::KlPgd
    }

    /// The noise stream of this evaluation: fixed by its name.
    pub fn stream(&self) -> u64 {
        // FNV-1a: stable across runs and platforms.
        let hash = self.name().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        EVAL_STREAM ^ hash
    }
}

/// Accuracy per evaluation, in percent, on `images` test images, in the
/// order the evaluations were configured and run (the JSON keeps it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub images: usize,
    /// Each evaluation's own accuracy on all `images`.
    pub accuracy: IndexMap<String, f64>,
    /// Percent of images classified correctly clean and under every evaluation run.
    pub worst_case: f64,
    /// Wall seconds spent on each evaluation.
    #[serde(default)]
    pub seconds: IndexMap<String, f64>,
    /// Parameter count, MACs and latency, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<EdgeReport>,
    /// Run as a cascade ([`Evaluation::cascade`]): each accuracy counts the images
    /// right under that evaluation and every earlier one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cascade: bool,
    /// The 95% Wilson score interval of each accuracy on `images` (percent),
    /// filled by [`EvalReport::with_intervals`].
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub intervals: IndexMap<String, Interval>,
    /// The interval of `worst_case`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_case_interval: Option<Interval>,
    /// Per evaluation made of parts (`autoattack`): the accuracy after each
    /// part, in order, the clean inputs first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parts: BTreeMap<String, Vec<PartResult>>,
    /// What the model checks run before AutoAttack found ([`checks`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<ModelFlag>,
}

impl EvalReport {
    /// The report with `intervals` and `worst_case_interval` filled from the
    /// accuracies and `images`.
    pub fn with_intervals(mut self) -> EvalReport {
        let n = self.images;
        self.intervals = self
            .accuracy
            .iter()
            .map(|(name, acc)| (name.clone(), interval::of_percent(*acc, n)))
            .collect();
        self.worst_case_interval = Some(interval::of_percent(self.worst_case, n));
        self
    }

    /// `name`'s accuracy with its interval (`30.45% (28.5-32.5, n=2,000)`);
    /// `-` when it did not run.
    pub fn accuracy_text(&self, name: &str) -> String {
        let acc = self.accuracy.get(name).copied().unwrap_or(f64::NAN);
        interval::accuracy_text(acc, self.images, 2)
    }

    /// The worst case with its interval.
    pub fn worst_case_text(&self) -> String {
        interval::accuracy_text(self.worst_case, self.images, 2)
    }

    /// What the worst case was taken over: `natural, pgd20, apgd_ce` (natural
    /// always counts, first).
    pub fn worst_case_over(&self) -> String {
        let names = self.accuracy.keys().map(String::as_str);
        std::iter::once("natural")
            .chain(names.filter(|n| *n != "natural"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One line per evaluation in the order run, then the worst case and what
    /// it was over, each as `{name:>width}: {accuracy with interval}`.
    pub fn lines(&self, width: usize) -> String {
        let mut s = String::new();
        for name in self.accuracy.keys() {
            s += &format!("{name:>width$}: {}\n", self.accuracy_text(name));
        }
        s += &format!(
            "{:>width$}: {} (right clean and under every one of {})\n",
            "worst_case",
            self.worst_case_text(),
            self.worst_case_over()
        );
        s
    }
}

/// One part of an evaluation made of parts, as AutoAttack reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartResult {
    pub name: String,
    /// Percent of all images still right after this part (and every earlier one).
    pub accuracy: f64,
    /// Those images, counted.
    pub robust: usize,
    /// Wall seconds this part took.
    pub seconds: f64,
}

/// Test images and labels, already as tensors.
pub struct EvalSet {
    pub images: Tensor,
    pub labels: Tensor,
}

impl EvalSet {
    /// Every image of `split`, clean, as tensors on the CPU.
    pub fn from_split(split: &crate::data::Split) -> Result<EvalSet> {
        use crate::data;
        let indices: Vec<usize> = (0..split.len()).collect();
        let views = vec![data::View::IDENTITY; indices.len()];
        let batch = data::make_batch(split, &indices, &views, Device::Cpu)?;
        Ok(EvalSet {
            images: batch.images,
            labels: batch.labels,
        })
    }

    /// The first `limit` CIFAR-10 test images (all without a limit), after
    /// making sure the data set is in `data.root`.
    pub fn test(data: &DataConfig, limit: Option<usize>) -> Result<EvalSet> {
        crate::data::ensure_cifar10(data)?;
        let test = crate::data::load_split(&data.root, SplitKind::Test, data.checksums)?;
        EvalSet::from_split(&match limit {
            Some(n) => test.prefix(n),
            None => test,
        })
    }

    /// The images `range` of the set (a shard of it).
    pub fn slice(&self, range: Range<usize>) -> Result<EvalSet> {
        let (start, len) = (range.start as i64, range.len() as i64);
        Ok(EvalSet {
            images: self.images.f_narrow(0, start, len)?,
            labels: self.labels.f_narrow(0, start, len)?,
        })
    }

    /// Consecutive batches of at most `size` images covering the set, in
    /// order: each as its rows and their indices (i64, on the CPU).
    pub fn batches(&self, size: usize) -> impl Iterator<Item = (Range<usize>, Tensor)> {
        let n = self.images.size()[0];
        index_batches(Tensor::arange(n, (Kind::Int64, Device::Cpu)), size)
    }

    /// The images (as f32) and labels of the rows `idx` (i64), on `device`.
    pub fn rows(&self, idx: &Tensor, device: Device) -> Result<(Tensor, Tensor)> {
        let x = self.images.f_index_select(0, idx)?.f_to_device(device)?;
        let y = self.labels.f_index_select(0, idx)?.f_to_device(device)?;
        Ok((x.f_to_kind(Kind::Float)?, y))
    }
}

/// Consecutive batches of at most `size` (at least 1) of `indices` [N]: each
/// as its positions in `indices` and those indices.
fn index_batches(indices: Tensor, size: usize) -> impl Iterator<Item = (Range<usize>, Tensor)> {
    let n = indices.size()[0].max(0) as usize;
    let size = size.max(1);
    (0..n).step_by(size).map(move |start| {
        let end = n.min(start + size);
        let rows = indices.narrow(0, start as i64, (end - start) as i64);
        (start..end, rows)
    })
}

/// Per-sample outcomes of an evaluation run: what [`EvalReport`] summarises.
#[derive(Debug)]
pub struct EvalMasks {
    /// The evaluations' names, in the order run.
    pub names: Vec<String>,
    /// Per evaluation, [N] bool: the model is right on that evaluation's input.
    pub correct: Vec<Tensor>,
    /// [N] bool: the model is right on the clean input (always computed).
    pub natural: Tensor,
    /// Wall seconds per evaluation.
    pub seconds: Vec<f64>,
    /// Made by [`Evaluation::cascade`]: `correct[i]` implies every earlier one.
    pub cascade: bool,
    /// Per evaluation made of parts (by name): each part's tally.
    pub parts: Vec<(String, Vec<PartTally>)>,
    /// What the model checks found.
    pub flags: Vec<ModelFlag>,
}

impl EvalMasks {
    /// [N] bool: right clean and under every evaluation.
    pub fn worst_case(&self) -> Tensor {
        self.correct
            .iter()
            .fold(self.natural.shallow_clone(), |acc, c| acc.logical_and(c))
    }

    /// Accuracies in percent.
    pub fn report(&self) -> EvalReport {
        let n = self.natural.size()[0].max(0) as usize;
        let pct =
            |mask: &Tensor| 100.0 * mask.sum(Kind::Int64).int64_value(&[]) as f64 / n.max(1) as f64;
        EvalReport {
            images: n,
            accuracy: self
                .names
                .iter()
                .zip(&self.correct)
                .map(|(name, c)| (name.clone(), pct(c)))
                .collect(),
            worst_case: pct(&self.worst_case()),
            seconds: self
                .names
                .iter()
                .cloned()
                .zip(self.seconds.iter().copied())
                .collect(),
            edge: None,
            cascade: self.cascade,
            parts: self
                .parts
                .iter()
                .map(|(name, tally)| {
                    let rows = tally.iter().map(|t| PartResult {
                        name: t.name.clone(),
                        accuracy: 100.0 * t.robust as f64 / n.max(1) as f64,
                        robust: t.robust,
                        seconds: t.seconds,
                    });
                    (name.clone(), rows.collect())
                })
                .collect(),
            flags: self.flags.clone(),
            ..EvalReport::default()
        }
        .with_intervals()
    }
}

fn check_set(set: &EvalSet, batch_size: usize) -> Result<usize> {
    let bad = |message: String| Err(Error::invalid("evaluation", message));
    let size = set.images.size();
    if size.len() != 4 || size[1] != 3 {
        return bad(format!("images must be [N, 3, H, W], got {size:?}"));
    }
    let labels = set.labels.size();
    if labels != [size[0]] {
        return bad(format!("{} images but labels of shape {labels:?}", size[0]));
    }
    if batch_size == 0 {
        return bad("batch size must be at least 1".into());
    }
    Ok(size[0] as usize)
}

/// [N] bool masks from per-batch parts (empty: [0]).
fn cat_masks(parts: &[Tensor]) -> Result<Tensor> {
    if parts.is_empty() {
        Ok(Tensor::zeros([0], (Kind::Bool, Device::Cpu)))
    } else {
        Ok(Tensor::f_cat(parts, 0)?)
    }
}

/// An evaluation with its attack (None: the clean input).
type BuiltEval = (EvalAttack, Option<Box<dyn Attack>>);

/// One evaluation job: a model on a test set under a list of evaluations.
#[derive(Clone, Copy)]
pub struct Evaluation<'a> {
    pub model: &'a Model,
    pub set: &'a EvalSet,
    pub evals: &'a [EvalAttack],
    /// The training attack `train_attack` replays; its eps is every attack's.
    pub train_attack: &'a AttackConfig,
    pub batch_size: usize,
    /// Seed of the random starts.
    pub seed: u64,
    /// Needed only by a teacher-based training attack (kl_pgd).
    pub teacher: Option<&'a Model>,
}

impl Evaluation<'_> {
    /// [B] bool: the model is right on `attack`'s perturbation of the batch
    /// `input` (its random starts keyed by the seed, the evaluation and `counter`).
    fn attacked_correct(
        &self,
        eval: &EvalAttack,
        attack: &dyn Attack,
        input: &AttackInput,
        counter: usize,
    ) -> Result<Tensor> {
        let key = NoiseKey {
            seed: self.seed,
            counter: counter as u64,
            stream: eval.stream(),
        };
        let x_adv = attack
            .perturb(self.model, input, key)
            .map_err(|e| Error::Evaluation {
                name: eval.name(),
                source: Box::new(e),
            })?;
        Ok(predict(self.model, &x_adv).f_eq_tensor(input.y)?)
    }

    /// The model checks ([`checks`]) on the first batch, when AutoAttack is
    /// among the evaluations (none otherwise).
    fn model_flags(&self) -> Result<Vec<ModelFlag>> {
        if !self.evals.contains(&EvalAttack::AutoAttack) {
            return Ok(Vec::new());
        }
        let Some((_, idx)) = self.set.batches(self.batch_size).next() else {
            return Ok(Vec::new());
        };
        let (x, y) = self.set.rows(&idx, self.model.device())?;
        checks::check_model(self.model, &x, &y)
    }

    /// Each evaluation's tally of parts, for those made of parts.
    fn parts_of(built: &[BuiltEval]) -> Vec<(String, Vec<PartTally>)> {
        let parts = built
            .iter()
            .filter_map(|(e, a)| Some((e.name(), a.as_ref()?.parts())));
        parts.filter(|(_, p)| !p.is_empty()).collect()
    }

    /// The number of images and each evaluation with its attack, after
    /// checking the set and that a teacher is there when one needs it.
    fn checked(&self) -> Result<(usize, Vec<BuiltEval>)> {
        let n = check_set(self.set, self.batch_size)?;
        let missing =
            |e: &&EvalAttack| e.needs_teacher(self.train_attack) && self.teacher.is_none();
        if let Some(e) = self.evals.iter().find(missing) {
            return Err(Error::Setting(format!(
                "evaluation {}: the training attack is kl_pgd, which needs the teacher's logits \
         (set teacher.weights)",
                e.name()
            )));
        }
        let built = self.evals.iter().map(|e| (*e, e.build(self.train_attack)));
        Ok((n, built.collect()))
    }

    /// Each evaluation's accuracy on every image, and the worst case.
    pub fn report(&self) -> Result<EvalReport> {
        Ok(self.masks(|_, _, _| {})?.report())
    }

    /// The rows `idx` of the set on the model's device (images as f32), with
    /// the teacher's logits on them when there is a teacher.
    fn batch(&self, idx: &Tensor) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let (x, y) = self.set.rows(idx, self.model.device())?;
        let t = self
            .teacher
            .map(|t| tch::no_grad(|| t.forward_t(&x, false)));
        Ok((x, y, t))
    }

    /// Runs every evaluation on every image, in batches, and returns
    /// per-sample correctness. `progress(label, done, n)` is called after each
    /// batch, `label` naming the evaluations (`natural+pgd20`).
    pub fn masks(&self, progress: impl FnMut(&str, usize, usize)) -> Result<EvalMasks> {
        self.masks_at(0, progress)
    }

    /// [`Evaluation::masks`] of a set that is images `offset..` of a larger
    /// one (a shard): random starts are keyed as in the whole set's run, so
    /// with shards of whole batches each image's result is the same.
    pub fn masks_at(
        &self,
        offset: usize,
        mut progress: impl FnMut(&str, usize, usize),
    ) -> Result<EvalMasks> {
        let (n, built) = self.checked()?;
        let label = match built.len() {
            0 => "natural".to_string(),
            _ => built
                .iter()
                .map(|(e, _)| e.name())
                .collect::<Vec<_>>()
                .join("+"),
        };
        let flags = self.model_flags()?;
        let mut correct: Vec<Vec<Tensor>> = (0..built.len()).map(|_| Vec::new()).collect();
        let mut natural = Vec::new();
        let mut seconds = vec![0.0; built.len()];
        progress(&label, 0, n);
        for (rows, idx) in self.set.batches(self.batch_size) {
            let (x, y, t) = self.batch(&idx)?;
            let input = AttackInput {
                x: &x,
                y: &y,
                teacher_logits: t.as_ref(),
            };
            let began = Instant::now();
            let clean = predict(self.model, &x).f_eq_tensor(&y)?;
            natural.push(clean.to_device(Device::Cpu));
            let clean_s = began.elapsed().as_secs_f64();
            for (i, (eval, attack)) in built.iter().enumerate() {
                let began = Instant::now();
                let ok = match attack {
                    None => clean.shallow_clone(),
                    Some(a) => {
                        let counter = offset + rows.start;
                        self.attacked_correct(eval, a.as_ref(), &input, counter)?
                    }
                };
                correct[i].push(ok.to_device(Device::Cpu));
                seconds[i] += began.elapsed().as_secs_f64();
                if attack.is_none() {
                    seconds[i] += clean_s;
                }
            }
            progress(&label, rows.end, n);
        }
        Ok(EvalMasks {
            names: built.iter().map(|(e, _)| e.name()).collect(),
            correct: correct
                .iter()
                .map(|c| cat_masks(c))
                .collect::<Result<_>>()?,
            natural: cat_masks(&natural)?,
            seconds,
            cascade: false,
            parts: Self::parts_of(&built),
            flags,
        })
    }

    /// AutoAttack's protocol: the evaluations run one after another in the order
    /// given, each only on the images the model is still right on (clean and
    /// under every earlier one), in full batches of those images. Natural
    /// always comes first (added when not listed): every later number is
    /// cumulative, and `natural` is the clean accuracy only in first place
    /// (`--attacks pgd1,natural` reported 65% as "natural" for 80%). The worst case
    /// is the quantity [`Evaluation::masks`] reports, for a fraction of the cost
    /// when the strong attacks come last; an evaluation's mask then means "right
    /// under it and every earlier one". Random starts are keyed by an image's
    /// position among the attacked ones, so they differ from [`Evaluation::masks`]'.
    /// `progress(name, done, n)` counts the images of the evaluation running.
    pub fn cascade(&self, mut progress: impl FnMut(&str, usize, usize)) -> Result<EvalMasks> {
        let (n, mut built) = self.checked()?;
        let flags = self.model_flags()?;
        built.retain(|(e, _)| *e != EvalAttack::Natural);
        built.insert(0, (EvalAttack::Natural, None));
        let began = Instant::now();
        // The clean pass alone: no evaluation, so no teacher either.
        let clean_pass = Evaluation {
            evals: &[],
            teacher: None,
            ..*self
        };
        let natural = clean_pass.masks(|_, _, _| {})?.natural;
        let clean_s = began.elapsed().as_secs_f64();
        let mut alive = natural.shallow_clone();
        let mut correct = Vec::with_capacity(built.len());
        let mut seconds = Vec::with_capacity(built.len());
        for (eval, attack) in &built {
            let began = Instant::now();
            let name = eval.name();
            let Some(attack) = attack else {
                // The clean input: every survivor is right on it already.
                correct.push(alive.copy());
                seconds.push(clean_s);
                continue;
            };
            let survivors = alive.f_nonzero()?.f_view([-1])?;
            let m = survivors.size()[0] as usize;
            let mut parts = Vec::new();
            progress(&name, 0, m);
            for (rows, idx) in index_batches(survivors.shallow_clone(), self.batch_size) {
                let (x, y, t) = self.batch(&idx)?;
                let input = AttackInput {
                    x: &x,
                    y: &y,
                    teacher_logits: t.as_ref(),
                };
                let ok = self.attacked_correct(eval, attack.as_ref(), &input, rows.start)?;
                parts.push(ok.to_device(Device::Cpu));
                progress(&name, rows.end, m);
            }
            let mut mask = Tensor::zeros([n as i64], (Kind::Bool, Device::Cpu));
            if m > 0 {
                mask = mask.f_index_put_(&[Some(&survivors)], &cat_masks(&parts)?, false)?;
            }
            alive = mask.shallow_clone();
            correct.push(mask);
            seconds.push(began.elapsed().as_secs_f64());
            log::info!(
                "eval cascade: {} on {m} images, {} still right",
                eval.name(),
                alive.sum(Kind::Int64).int64_value(&[])
            );
        }
        Ok(EvalMasks {
            names: built.iter().map(|(e, _)| e.name()).collect(),
            parts: Self::parts_of(&built),
            correct,
            natural,
            seconds,
            cascade: true,
            flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_depend_on_the_name_only() {
        let a = EvalAttack::parse("pgd20").unwrap();
        let b = EvalAttack::parse("pgd20_r2").unwrap();
        assert_eq!(a.stream(), EvalAttack::parse("pgd20").unwrap().stream());
        assert_ne!(a.stream(), b.stream());
    }
}
