//! Structural checks of a config: ranges and consistency, no device, no files.
//! `ard-pipeline validate` runs exactly these.

use super::types::*;
use super::Real;
use std::fmt;

/// One problem, naming the key and the value at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationError {
    pub key: &'static str,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key `{}` = {}: {}", self.key, self.value, self.reason)
    }
}

/// CIFAR-10's training images.
const TRAIN_IMAGES: usize = 50_000;
/// The largest learning rate accepted: SGD beyond it diverges for every model here.
const MAX_LR: f64 = 10.0;
/// The longest run name: a file name holds 255 bytes, and the folder's lock
/// (`NAME.lock`) and a moved-aside earlier run (`NAME.previous-N`) add to it.
const MAX_RUN_NAME_BYTES: usize = 200;
/// The largest queue between two stages (batches).
const MAX_QUEUE_CAPACITY: usize = 64;

struct Checks(Vec<ValidationError>);

/// A value as the config file writes it, strings quoted (`unset` for an
/// absent optional one).
fn shown(value: impl serde::Serialize) -> String {
    match serde_json::to_value(&value) {
        Ok(serde_json::Value::String(s)) => format!("{s:?}"),
        _ => super::spelled(&value),
    }
}

impl Checks {
    fn require(&mut self, ok: bool, key: &'static str, value: impl serde::Serialize, reason: &str) {
        if !ok {
            self.0.push(ValidationError {
                key,
                value: shown(value),
                reason: reason.into(),
            });
        }
    }

    /// A path that is set must not be empty (an empty one would mean the
    /// current directory, or nothing at all).
    fn path_not_empty(&mut self, key: &'static str, path: Option<&std::path::Path>) {
        self.require(
            path.is_none_or(|p| !p.as_os_str().is_empty()),
            key,
            "",
            "must not be empty (give a path, or leave the key out)",
        );
    }

    fn known_eval(&mut self, key: &'static str, name: &str) {
        let reason = format!("unknown; known: {}", super::KNOWN_EVALS);
        self.require(super::EvalAttack::parse(name).is_ok(), key, name, &reason);
    }

    fn at_least_1(&mut self, key: &'static str, value: usize) {
        self.require(value >= 1, key, value, "must be at least 1");
    }

    fn at_least_1_if_set(&mut self, key: &'static str, value: Option<usize>) {
        self.require(value != Some(0), key, value, "must be at least 1 when set");
    }

    fn positive(&mut self, key: &'static str, value: Real) {
        self.require(value.get() > 0.0, key, value, "must be positive");
    }

    fn non_negative(&mut self, key: &'static str, value: Real) {
        self.require(value.get() >= 0.0, key, value, "must be non-negative");
    }

    /// `value`, when set, must be positive; `reason` says so.
    fn positive_if_set(&mut self, key: &'static str, value: Option<Real>, reason: &str) {
        self.require(value.is_none_or(|v| v.get() > 0.0), key, value, reason);
    }
}

impl Config {
    /// All structural problems at once (empty `Err` never happens).
    pub fn validate(&self) -> Result<(), Vec<ValidationError>> {
        let mut c = Checks(Vec::new());
        self.check_run_and_data(&mut c);
        self.check_teacher(&mut c);
        self.check_attack(&mut c);
        self.check_loss(&mut c);
        self.check_optim(&mut c);
        self.check_train_and_eval(&mut c);
        self.check_pipeline(&mut c);
        self.check_perf(&mut c);
        self.check_validation_and_guard(&mut c);
        if c.0.is_empty() {
            Ok(())
        } else {
            Err(c.0)
        }
    }

    /// Run name, device and paths; data batch size and limits.
    fn check_run_and_data(&self, c: &mut Checks) {
        let d = &self.data;
        c.at_least_1("data.batch_size", d.batch_size);
        c.require(
            d.batch_size <= TRAIN_IMAGES,
            "data.batch_size",
            d.batch_size,
            "must be at most 50,000 (CIFAR-10's training set)",
        );
        c.at_least_1_if_set("data.train_limit", d.train_limit);
        c.at_least_1_if_set("data.test_limit", d.test_limit);
        c.at_least_1_if_set("eval.test_limit", self.eval.test_limit);
        let name = &self.run.name;
        c.require(
            !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != "..",
            "run.name",
            name,
            "must be a folder name: not empty, not \".\" or \"..\", without path separators",
        );
        c.require(
            name.len() <= MAX_RUN_NAME_BYTES,
            "run.name",
            format!(
                "{}... ({} bytes)",
                name.chars().take(24).collect::<String>(),
                name.len()
            ),
            &format!(
                "must be at most {MAX_RUN_NAME_BYTES} bytes (with `.previous-N` and `.lock` \
             appended it must still fit a file name)"
            ),
        );
        c.path_not_empty("run.out_dir", Some(&self.run.out_dir));
        c.path_not_empty("run.save_final", self.run.save_final.as_deref());
        c.path_not_empty("data.root", Some(&self.data.root));
        c.path_not_empty("teacher.weights", self.teacher.weights.as_deref());
        c.path_not_empty("teacher.cache_dir", Some(&self.teacher.cache_dir));
        c.path_not_empty("student.init", self.student.init.as_deref());
        c.require(
            crate::device::parse_device(&self.run.device).is_ok(),
            "run.device",
            &self.run.device,
            "must be cpu, cuda, cuda:N or auto",
        );
        c.at_least_1_if_set("run.threads", self.run.threads);
        c.require(
            self.run.checkpoint_every_steps != Some(0),
            "run.checkpoint_every_steps",
            self.run.checkpoint_every_steps.unwrap_or(0),
            "must be at least 1 when set (epoch ends are always checkpointed)",
        );
    }

    /// Teacher views and soft labels.
    fn check_teacher(&self, c: &mut Checks) {
        if let Views::Fixed(k) = self.teacher.views {
            c.require(
                (1..=162).contains(&k),
                "teacher.views",
                k,
                "must be \"all\" or from 1 to 162",
            );
            c.require(
            self.data.augment,
            "teacher.views",
            k,
            "a number of fixed views needs data.augment = true (without augmentation every image has only its identity view)",
        );
        }
        c.require(
            self.teacher.soft_labels == SoftLabels::Online || uses_teacher(self.loss.kind),
            "teacher.soft_labels",
            self.teacher.soft_labels,
            "\"cached\" caches teacher logits, but this loss uses no teacher; use \"online\"",
        );
    }

    /// The training attack, and what it needs of the loss and the teacher.
    fn check_attack(&self, c: &mut Checks) {
        let a = &self.attack;
        let eps = a.eps.get();
        let step = a.step_size.get();
        if a.kind != AttackKind::None {
            c.require(
                eps > 0.0 && eps <= 1.0,
                "attack.eps",
                eps,
                "must be in (0, 1] (inputs are in [0,1])",
            );
            c.require(step > 0.0, "attack.step_size", step, "must be positive");
            c.require(step <= 2.0 * eps, "attack.step_size", step,
            "must be at most 2*eps: a larger step always leaves the eps-ball and is projected back");
        }
        match a.kind {
            AttackKind::Fgsm | AttackKind::FgsmRs | AttackKind::NFgsm => c.require(
                a.steps == 1,
                "attack.steps",
                a.steps,
                "fgsm, fgsm_rs and n_fgsm take exactly 1 step",
            ),
            AttackKind::Pgd | AttackKind::KlPgd | AttackKind::Trades => {
                c.at_least_1("attack.steps", a.steps)
            }
            AttackKind::None => {}
        }
        c.require(
            a.kind != AttackKind::Fgsm || a.random_start == RandomStart::None,
            "attack.random_start",
            a.random_start,
            "fgsm has no random start; use fgsm_rs for one",
        );
        c.require(
            !matches!(a.kind, AttackKind::FgsmRs | AttackKind::NFgsm)
                || matches!(
                    a.random_start,
                    RandomStart::Uniform | RandomStart::UniformClamped
                ),
            "attack.random_start",
            a.random_start,
            "fgsm_rs and n_fgsm start uniformly (uniform or uniform_clamped)",
        );
        c.require(
            a.target == AttackTarget::Student || self.loss.kind == LossKind::PaperAlg1,
            "attack.target",
            a.target,
            "only the paper_alg1 loss attacks the teacher",
        );
        c.require(a.target == AttackTarget::Student || a.bn_mode == BnMode::Eval, "attack.bn_mode", a.bn_mode,
        "an attack on the teacher runs its BatchNorm in eval mode (the teacher is never updated)");
        c.require(
            !uses_teacher(self.loss.kind) || self.teacher.weights.is_some(),
            "teacher.weights",
            &self.teacher.weights,
            "the loss distils from a teacher: give its safetensors checkpoint",
        );
        c.require(
            a.kind != AttackKind::KlPgd || uses_teacher(self.loss.kind),
            "attack.kind",
            a.kind,
            "kl_pgd needs teacher soft labels; use a loss with a teacher (ard, rslad, paper_alg1)",
        );
    }

    /// The loss, and the attack it trains on.
    fn check_loss(&self, c: &mut Checks) {
        let a = &self.attack;
        let l = &self.loss;
        let alpha = l.alpha.get();
        c.require(
            (0.0..=1.0).contains(&alpha),
            "loss.alpha",
            alpha,
            "must be in [0, 1]",
        );
        c.positive("loss.temperature", l.temperature);
        c.non_negative("loss.rslad_adv_weight", l.rslad_adv_weight);
        c.non_negative("loss.rslad_nat_weight", l.rslad_nat_weight);
        c.non_negative("loss.beta", l.beta);
        c.non_negative("loss.lambda", l.lambda);
        c.require(
            !l.clean_forward_for_bn || (l.kind == LossKind::Ard && alpha == 1.0),
            "loss.clean_forward_for_bn",
            true,
            "only means something for the ard loss with alpha = 1",
        );
        c.require(
            l.kind != LossKind::Trades || a.kind == AttackKind::Trades,
            "attack.kind",
            a.kind,
            "the trades loss trains on the trades attack",
        );
        c.require(
            l.kind != LossKind::PaperAlg1
                || (a.kind == AttackKind::Fgsm && a.target == AttackTarget::Teacher),
            "attack.kind",
            a.kind,
            "paper_alg1 is FGSM against the teacher: kind = \"fgsm\", target = \"teacher\"",
        );
    }

    /// Optimiser and learning-rate schedule.
    fn check_optim(&self, c: &mut Checks) {
        let o = &self.optim;
        c.require(
            o.lr.get() > 0.0 && o.lr.get() <= MAX_LR,
            "optim.lr",
            o.lr,
            &format!("must be in (0, {MAX_LR}] (a finite, positive step)"),
        );
        c.require(
            (0.0..1.0).contains(&o.momentum.get()),
            "optim.momentum",
            o.momentum,
            "must be in [0, 1)",
        );
        c.non_negative("optim.weight_decay", o.weight_decay);
        c.require(
            !o.nesterov || o.momentum.get() > 0.0,
            "optim.nesterov",
            true,
            "needs momentum > 0",
        );
        c.positive_if_set("optim.grad_clip", o.grad_clip, "must be positive when set");
        let s = &o.schedule;
        let multistep = s.kind == ScheduleKind::Multistep;
        c.require(
            multistep == s.milestones.is_some(),
            "optim.schedule.milestones",
            &s.milestones,
            "is required by, and only used by, kind = \"multistep\"",
        );
        c.require(
            multistep == s.gamma.is_some(),
            "optim.schedule.gamma",
            s.gamma,
            "is required by, and only used by, kind = \"multistep\"",
        );
        if let Some(m) = &s.milestones {
            c.require(
                m.windows(2).all(|w| w[0] < w[1]),
                "optim.schedule.milestones",
                m,
                "must be strictly increasing",
            );
        }
        c.positive_if_set("optim.schedule.gamma", s.gamma, "must be positive");
        c.require(
            s.peak_at.is_none() || s.kind == ScheduleKind::OneCycle,
            "optim.schedule.peak_at",
            s.peak_at,
            "is only used by kind = \"one_cycle\"",
        );
        c.require(
            s.peak_at.is_none_or(|p| p.get() > 0.0 && p.get() < 1.0),
            "optim.schedule.peak_at",
            s.peak_at,
            "must be in (0, 1)",
        );
    }

    /// Training length and the evaluation attacks.
    fn check_train_and_eval(&self, c: &mut Checks) {
        c.at_least_1("train.epochs", self.train.epochs);
        c.at_least_1_if_set("train.max_steps", self.train.max_steps);
        if let Some(budget) = self.train.max_seconds {
            c.require(
                budget.get() > 0.0 && budget.get().is_finite(),
                "train.max_seconds",
                budget,
                "must be a positive number of seconds",
            );
            c.require(
            self.optim.schedule.kind != ScheduleKind::Multistep,
            "train.max_seconds",
            budget,
            "a time budget runs the schedule over time, and multistep milestones are epochs: use one_cycle, cosine or constant",
        );
        }
        for name in &self.eval.attacks {
            c.known_eval("eval.attacks", name);
        }
        let parsed: std::result::Result<Vec<_>, _> = (self.eval.attacks.iter())
            .map(|n| super::EvalAttack::parse(n))
            .collect();
        if let Ok(evals) = parsed {
            if let Err(reason) = super::EvalAttack::check_list(&evals) {
                c.require(false, "eval.attacks", &self.eval.attacks, &reason);
            }
        }
    }

    /// Pipeline queues and watchdog; metrics address.
    fn check_pipeline(&self, c: &mut Checks) {
        let p = &self.pipeline;
        c.require(
            (1..=MAX_QUEUE_CAPACITY).contains(&p.queue_capacity),
            "pipeline.queue_capacity",
            p.queue_capacity,
            &format!(
                "must be from 1 to {MAX_QUEUE_CAPACITY} (every slot may hold a batch in memory; \
             2 keeps every stage busy)"
            ),
        );
        c.require(
            p.max_weight_staleness <= 1,
            "pipeline.max_weight_staleness",
            p.max_weight_staleness,
            "must be 0 or 1",
        );
        c.positive_if_set(
            "pipeline.stall_timeout_s",
            p.stall_timeout_s,
            "must be positive when set",
        );
        let listen = &self.metrics.listen;
        c.require(
            listen.is_empty() || listen.parse::<std::net::SocketAddr>().is_ok(),
            "metrics.listen",
            listen,
            "must be HOST:PORT with a numeric host, e.g. 127.0.0.1:9187, or empty",
        );
    }

    /// Performance switches that only apply to some losses and attacks.
    fn check_perf(&self, c: &mut Checks) {
        let a = &self.attack;
        let perf = &self.perf;
        c.require(
            perf.clean_forward_no_grad != Some(true)
                || self.loss.build().clean_forward_only_for_bn(),
            "perf.clean_forward_no_grad",
            true,
            "only means something for the ard loss with alpha = 1 and clean_forward_for_bn = true",
        );
        if perf.attack_dtype == ComputeDtype::Bf16 {
            c.require(
                a.kind != AttackKind::None,
                "perf.attack_dtype",
                perf.attack_dtype,
                "bf16 is for the training attack, and attack.kind = \"none\" runs none",
            );
            c.require(
                a.target == AttackTarget::Student,
                "perf.attack_dtype",
                perf.attack_dtype,
                "bf16 applies to the attack on the student; an attack on the teacher runs in f32",
            );
        }
    }

    /// Validation split, model selection and the catastrophic-overfitting guard.
    fn check_validation_and_guard(&self, c: &mut Checks) {
        let v = self.data.validation_images;
        c.require(
            v < TRAIN_IMAGES,
            "data.validation_images",
            v,
            "must leave training images: at most 49999 of CIFAR-10's 50000",
        );
        if let Some(n) = self.data.train_limit {
            c.require(
                n.saturating_add(v) <= TRAIN_IMAGES,
                "data.train_limit",
                n,
                &format!(
                    "with data.validation_images = {v} at most {} images remain for training \
                 (the validation split is the last {v} of the 50000)",
                    TRAIN_IMAGES.saturating_sub(v)
                ),
            );
        }
        c.known_eval("eval.validation_attack", &self.eval.validation_attack);
        c.at_least_1_if_set("eval.validation_limit", self.eval.validation_limit);
        let g = &self.guard;
        c.require(
            g.max_drop.get() > 0.0 && g.max_drop.get() <= 100.0,
            "guard.max_drop",
            g.max_drop,
            "must be in (0, 100] (percentage points)",
        );
        c.require(
            g.action == GuardAction::Off || v >= 1,
            "guard.action",
            g.action,
            "the guard evaluates held-out images: set data.validation_images to at least 1",
        );
    }
}

/// Whether a loss needs the teacher's outputs.
pub fn uses_teacher(kind: LossKind) -> bool {
    matches!(kind, LossKind::Ard | LossKind::Rslad | LossKind::PaperAlg1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_name_errors(name: &str) -> Vec<ValidationError> {
        let mut cfg = Config::default();
        cfg.run.name = name.to_string();
        cfg.validate()
            .err()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.key == "run.name")
            .collect()
    }

    #[test]
    fn run_names_that_are_not_a_folder_of_their_own_are_refused() {
        for bad in [".", "..", "", "a/b", "a\\b"] {
            let errors = run_name_errors(bad);
            assert_eq!(errors.len(), 1, "{bad:?}: {errors:?}");
            assert!(errors[0].reason.contains("folder name"), "{errors:?}");
        }
        let long = run_name_errors(&"x".repeat(300));
        assert_eq!(long.len(), 1, "{long:?}");
        assert!(
            long[0].to_string().contains("300 bytes") && long[0].reason.contains("at most 200"),
            "{}",
            long[0]
        );
        for good in ["quickstart", "a.b", "..x", &"y".repeat(200)] {
            assert!(run_name_errors(good).is_empty(), "{good:?}");
        }
    }
}
