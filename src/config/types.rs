//! The experiment description: serde types with their defaults, one struct a section.
//!
//! Every struct denies unknown keys, so a misspelt key in an ablation file fails
//! loudly with its name. Defaults live here and only here.

use super::real::Real;
use crate::models::Arch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A whole run: one TOML file, plus `ARD__SECTION__KEY` environment overrides.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Another config file (relative to this one) that this file extends: its
    /// settings apply first, this file's on top. Resolved by `load`.
    #[serde(skip_serializing)]
    pub base: Option<PathBuf>,
    pub run: RunConfig,
    pub data: DataConfig,
    pub teacher: TeacherConfig,
    pub student: StudentConfig,
    pub attack: AttackConfig,
    pub loss: LossConfig,
    pub optim: OptimConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
    pub pipeline: PipelineConfig,
    pub metrics: MetricsConfig,
    pub perf: PerfConfig,
    /// `[guard]`: the catastrophic-overfitting guard.
    pub guard: GuardConfig,
}

/// `[run]`: identity, seed, device and where results go.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Run name; the run folder is `out_dir/name`, and metrics carry it as `run`.
    pub name: String,
    /// Seed of everything random: init, shuffles, views, random starts.
    pub seed: u64,
    /// `cpu`, `cuda`, `cuda:N`, or `auto` (CUDA when available).
    pub device: String,
    /// Parent folder of run folders.
    pub out_dir: PathBuf,
    /// Also save the final student weights here (safetensors).
    pub save_final: Option<PathBuf>,
    /// Intra-op threads for libtorch on CPU (default: all cores).
    pub threads: Option<usize>,
    /// Also write the training checkpoint (`checkpoint.safetensors`: weights,
    /// optimiser state, data position) every N optimisation steps; it is
    /// always written at epoch ends and on SIGINT/SIGTERM.
    pub checkpoint_every_steps: Option<usize>,
    /// What a run does when its folder holds an unfinished checkpoint:
    /// `auto` resumes it (the config must match), `always` requires one
    /// (`--resume`), `never` starts afresh (`--fresh`).
    pub resume: ResumePolicy,
}

/// Whether a run continues from the checkpoint in its run folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResumePolicy {
    /// Resume an unfinished checkpoint when there is one, else start afresh.
    #[default]
    Auto,
    /// Resume; a missing checkpoint is an error.
    Always,
    /// Start afresh, discarding any checkpoint of an earlier run of this name.
    Never,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            name: "ard".into(),
            seed: 0,
            device: "auto".into(),
            out_dir: "runs".into(),
            save_final: None,
            threads: None,
            checkpoint_every_steps: None,
            resume: ResumePolicy::Auto,
        }
    }
}

/// Which checksums the dataset files must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataChecksums {
    /// Files extracted by this project's downloader from the verified official archive.
    Official,
    /// The offline rebuild described in `shared/data/README.md`.
    OfflineCopy,
    /// Either of the two sets above.
    Any,
    /// No verification (explicitly asked for); files of fewer than 10,000
    /// whole records are then accepted too (subsets, e.g. the device kit's).
    Skip,
}

/// `[data]`: CIFAR-10 location, batching and augmentation.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Folder holding `data_batch_{1..5}.bin` and `test_batch.bin`.
    pub root: PathBuf,
    /// Download the official archive into `root` when the files are absent.
    pub download: bool,
    /// Which checksums to verify the files against.
    pub checksums: DataChecksums,
    /// Images per training batch (1 to 50,000); evaluation batches too
    /// unless a command says otherwise.
    pub batch_size: usize,
    /// Use only the first N training images.
    pub train_limit: Option<usize>,
    /// Use only the first N test images.
    pub test_limit: Option<usize>,
    /// Hold out the last N of the 50,000 training images as the validation
    /// split (model selection, overfitting guard); training never sees them
    /// and uses a prefix of the rest (`train_limit` of it). 0: no split.
    pub validation_images: usize,
    /// Reshuffle the training set every epoch (seeded).
    pub shuffle: bool,
    /// Random crop (padding 4) and horizontal flip.
    pub augment: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            root: "data/cifar-10-batches-bin".into(),
            download: true,
            checksums: DataChecksums::Any,
            batch_size: 128,
            train_limit: None,
            test_limit: None,
            validation_images: 1000,
            shuffle: true,
            augment: true,
        }
    }
}

/// Where the teacher's soft labels come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SoftLabels {
    /// A teacher forward on every batch.
    Online,
    /// Looked up in the view-indexed cache, computed on a miss.
    Cached,
}

/// `[teacher]`: the robust teacher.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TeacherConfig {
    /// The teacher's architecture (it must match `weights`).
    pub arch: Arch,
    /// Teacher weights (safetensors). Required by losses that use a teacher.
    pub weights: Option<PathBuf>,
    /// `online` (a teacher forward per batch) or `cached` (the soft-label cache
    /// file in `cache_dir`, filled by `ard-pipeline soft-labels` or by the runs).
    pub soft_labels: SoftLabels,
    /// Augmentation views: `"all"` (the paper's random crop+flip, 162 views per
    /// image) or a number K: each image is trained on one of K fixed views, so
    /// the teacher runs on K views per image at most, at the cost of a weaker
    /// augmentation (see `soft_labels::views`).
    pub views: Views,
    /// Folder of the soft-label cache file (`soft_labels = "cached"`).
    pub cache_dir: PathBuf,
    /// Storage type of cached logits: `f16` (half the size) or `f32` (exact).
    pub cache_dtype: CacheDtype,
}

/// Storage type of the logits in the soft-label cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CacheDtype {
    /// IEEE half precision: 20 bytes per (image, view); logits rounded to 11 significant bits.
    F16,
    /// Single precision: bit-identical to the teacher's forward.
    F32,
}

impl Default for TeacherConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Wrn {
                depth: 34,
                widen: 10,
            },
            weights: None,
            soft_labels: SoftLabels::Online,
            views: Views::All,
            cache_dir: "cache/soft-labels".into(),
            cache_dtype: CacheDtype::F16,
        }
    }
}

/// How many augmentation views per image the soft-label cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Views {
    /// Every view of the paper's augmentation (162 per image).
    All,
    /// K fixed views per image (1 to 162).
    Fixed(u32),
}

impl JsonSchema for Views {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Views".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-type": "\"all\" or integer",
            "oneOf": [
                {
                    "const": "all",
                    "description": "every random crop (padding 4) and flip: 162 views per image, the paper's augmentation",
                },
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 162,
                    "description": "each image is trained on one of K fixed views",
                },
            ],
        })
    }
}

impl Serialize for Views {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Views::All => s.serialize_str("all"),
            Views::Fixed(k) => s.serialize_u32(*k),
        }
    }
}

impl<'de> Deserialize<'de> for Views {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Views;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"all\" or a number of views from 1 to 162")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Views, E> {
                if v == "all" {
                    Ok(Views::All)
                } else {
                    v.parse::<u64>()
                        .map_err(|_| E::custom(format!("{v:?} is not \"all\" or a number")))
                        .and_then(|k| self.visit_u64(k))
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Views, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("{v} views")))
                    .and_then(|k| self.visit_u64(k))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Views, E> {
                u32::try_from(v)
                    .map(Views::Fixed)
                    .map_err(|_| E::custom(format!("{v} views")))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[student]`: the model being distilled.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StudentConfig {
    /// The student's architecture.
    pub arch: Arch,
    /// Initial weights (safetensors); default: seeded random init.
    pub init: Option<PathBuf>,
}

impl Default for StudentConfig {
    fn default() -> Self {
        Self {
            arch: Arch::MobileNetV2 { width: 1.0 },
            init: None,
        }
    }
}

/// The attack kinds; each is one file under `src/attacks/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    /// Clean inputs.
    None,
    /// One signed-gradient step of `step_size` from x (no random start).
    Fgsm,
    /// Uniform random start, one step (Wong et al., "Fast is better than free").
    FgsmRs,
    /// Uniform start of radius 2 eps, one step, no projection to the eps-ball
    /// (N-FGSM, de Jorge et al. 2022): single-step training that resists
    /// catastrophic overfitting.
    NFgsm,
    /// k steps of CE on the true labels (ARD's and the paper's training attack).
    Pgd,
    /// k steps maximising KL(S(x') || T(x)) (RSLAD).
    KlPgd,
    /// k steps maximising KL(S(x') || S(x)) (TRADES).
    Trades,
}

/// How an attack starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RandomStart {
    /// x + U(-eps, eps), not clamped before the first forward (ARD).
    Uniform,
    /// clamp(x + U(-eps, eps), 0, 1).
    UniformClamped,
    /// x + 0.001 N(0, 1) (RSLAD, TRADES).
    NormalSmall,
    /// x itself.
    None,
}

/// BatchNorm mode of the attacked model while the attack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BnMode {
    /// Batch statistics; running statistics are updated (ARD, the paper).
    Train,
    /// Running statistics (RSLAD).
    Eval,
}

/// Which model the attack differentiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttackTarget {
    /// The student being trained (every loss but `paper_alg1`).
    Student,
    /// The paper's Algorithm 1 as written: FGSM against the teacher.
    Teacher,
}

/// `[attack]`: the training attack.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AttackConfig {
    /// Which attack makes the training examples.
    pub kind: AttackKind,
    /// L-inf radius (inputs are in [0, 1]; in (0, 1]).
    pub eps: Real,
    /// Size of each signed-gradient step (positive, at most 2 eps).
    pub step_size: Real,
    /// Gradient steps per batch: exactly 1 for `fgsm`, `fgsm_rs` and
    /// `n_fgsm`, at least 1 for `pgd`, `kl_pgd` and `trades`.
    pub steps: usize,
    /// How the attack starts before its first step.
    pub random_start: RandomStart,
    /// BatchNorm mode of the attacked model while the attack runs.
    pub bn_mode: BnMode,
    /// Which model the attack differentiates.
    pub target: AttackTarget,
}

impl Default for AttackConfig {
    fn default() -> Self {
        Self {
            kind: AttackKind::Pgd,
            eps: Real(8.0 / 255.0),
            step_size: Real(2.0 / 255.0),
            steps: 10,
            random_start: RandomStart::Uniform,
            bn_mode: BnMode::Train,
            target: AttackTarget::Student,
        }
    }
}

/// The training losses; one function each in `src/distill/losses.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// ARD (Goldblum et al.).
    Ard,
    /// RSLAD (Zi et al.).
    Rslad,
    /// Madry PGD adversarial training (no teacher).
    PgdAt,
    /// TRADES (no teacher).
    Trades,
    /// The paper's Algorithm 1 as written.
    PaperAlg1,
}

/// KL divergence reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KlReduction {
    /// Sum over everything / (batch * classes): ARD's and the paper's.
    Mean,
    /// Sum / batch: the mathematically proper KL.
    Batchmean,
}

/// `[loss]`: the training objective.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// The training objective.
    pub kind: LossKind,
    /// ARD: weight of the distillation term (1 - alpha weights CE on clean inputs).
    pub alpha: Real,
    /// ARD: distillation temperature.
    pub temperature: Real,
    /// How the KL divergence of the distillation terms is averaged.
    pub kl_reduction: KlReduction,
    /// ARD with alpha = 1: still run the clean student forward for its BatchNorm side effect.
    pub clean_forward_for_bn: bool,
    /// RSLAD: weight of KL(S(x_adv) || T(x)).
    pub rslad_adv_weight: Real,
    /// RSLAD: weight of KL(S(x) || T(x)).
    pub rslad_nat_weight: Real,
    /// TRADES: weight of the robustness term.
    pub beta: Real,
    /// Paper Algorithm 1: weight of CE(S(x_adv), y).
    pub lambda: Real,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            kind: LossKind::Ard,
            alpha: Real(1.0),
            temperature: Real(30.0),
            kl_reduction: KlReduction::Mean,
            clean_forward_for_bn: false,
            rslad_adv_weight: Real(5.0 / 6.0),
            rslad_nat_weight: Real(1.0 / 6.0),
            beta: Real(6.0),
            lambda: Real(1.0),
        }
    }
}

/// Learning-rate schedule kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// The same rate throughout.
    #[default]
    Constant,
    /// lr * gamma^(number of milestones passed); milestones in epochs.
    Multistep,
    /// Cosine from lr to 0 over the run, per iteration.
    Cosine,
    /// Piecewise linear per iteration: 0 -> lr at `peak_at` of the run -> 0.
    OneCycle,
}

/// `[optim.schedule]`. Keys that only one kind uses are optional, and rejected for the others.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// The schedule's shape.
    pub kind: ScheduleKind,
    /// multistep: epochs at which the rate is multiplied by `gamma`.
    pub milestones: Option<Vec<usize>>,
    /// multistep: the factor.
    pub gamma: Option<Real>,
    /// one_cycle: where the peak lies, as a fraction of all iterations.
    pub peak_at: Option<Real>,
}

/// `[optim]`: SGD and its schedule.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Learning rate, in (0, 10]: the schedule's start (its peak for `one_cycle`).
    pub lr: Real,
    /// SGD momentum, in [0, 1).
    pub momentum: Real,
    /// L2 weight decay, added to the gradient (as PyTorch's SGD does).
    pub weight_decay: Real,
    /// Nesterov momentum (needs `momentum` > 0).
    pub nesterov: bool,
    /// Clip the global gradient L2 norm to this value.
    pub grad_clip: Option<Real>,
    /// The learning-rate schedule.
    pub schedule: ScheduleConfig,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: Real(0.1),
            momentum: Real(0.9),
            weight_decay: Real(2e-4),
            nesterov: false,
            grad_clip: None,
            schedule: ScheduleConfig::default(),
        }
    }
}

/// `[train]`: how long.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Passes over the training images (at least 1); with `max_seconds` an
    /// upper bound.
    pub epochs: usize,
    /// Stop after this many optimisation steps in all (for quick checks).
    pub max_steps: Option<usize>,
    /// A training-time budget in seconds (`src/train/budget.rs`): training
    /// stops when it is spent (evaluation time not counted), and the
    /// learning-rate schedule runs over the budget's time instead of over
    /// steps; `epochs` is then an upper bound. For comparisons at equal cost.
    pub max_seconds: Option<Real>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            max_steps: None,
            max_seconds: None,
        }
    }
}

/// `[eval]`: robustness evaluation during and after training.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Evaluate every N epochs (0: only at the end).
    pub every_epochs: usize,
    /// Attacks to evaluate: `natural`, `train_attack`, `fgsm`, `pgd20`, ...
    pub attacks: Vec<String>,
    /// Use only the first N test images for evaluation.
    pub test_limit: Option<usize>,
    /// The attack `best.safetensors` is chosen by on the validation split
    /// (highest accuracy under it, ties by natural accuracy); the guard uses it too.
    pub validation_attack: String,
    /// Validate on only the first N validation images (default: `test_limit`, else all).
    pub validation_limit: Option<usize>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            every_epochs: 1,
            attacks: vec!["natural".into(), "train_attack".into(), "pgd20".into()],
            test_limit: None,
            validation_attack: "pgd10".into(),
            validation_limit: None,
        }
    }
}

/// `[pipeline]`: the actor runtime.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Capacity of every bounded queue between stages (batches).
    pub queue_capacity: usize,
    /// 0: the attack waits for the newest weights (exact); 1: it may use weights one step old.
    pub max_weight_staleness: u64,
    /// Fail when a stage is busy on one batch for longer than this (seconds).
    pub stall_timeout_s: Option<Real>,
    /// Where the teacher, attack and student stages run their tensor work.
    pub compute: ComputePlacement,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 2,
            max_weight_staleness: 0,
            stall_timeout_s: None,
            compute: ComputePlacement::Auto,
        }
    }
}

/// `pipeline.compute`: where the teacher, attack and student stages compute.
/// Either way each stage keeps its own thread, queue and metrics; this only
/// decides which OS thread runs their tensor operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComputePlacement {
    /// `shared` on a CPU, `per_stage` on a GPU.
    #[default]
    Auto,
    /// One compute thread with all the run's cores, used by the three stages
    /// in turn (`ard_actors::ComputeLane`): one intra-op thread team, never
    /// more compute threads than cores. On a CPU the stages cannot overlap
    /// usefully anyway (each would take the same cores).
    Shared,
    /// Each stage computes on its own thread (a GPU overlaps their kernels;
    /// on a CPU their intra-op teams oversubscribe the cores).
    PerStage,
}

impl ComputePlacement {
    /// Whether the stages share one compute thread on `device`.
    pub fn shared_on(self, device: tch::Device) -> bool {
        match self {
            ComputePlacement::Auto => device == tch::Device::Cpu,
            ComputePlacement::Shared => true,
            ComputePlacement::PerStage => false,
        }
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of /metrics, /healthz and /status; empty disables the endpoint.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9187".into(),
        }
    }
}

/// Numeric type of a model's forward and backward passes (the training
/// attack's, `perf.attack_dtype`, or the student's update, `perf.student_dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComputeDtype {
    /// Single precision, as everything else.
    #[default]
    F32,
    /// bfloat16 convolutions and linear layers on a copy of the student (BatchNorm
    /// and its running statistics stay f32; inputs and logits are cast at the
    /// model's edges). Needs a CPU with native bf16 (AVX512-BF16); refused on CUDA.
    Bf16,
    /// `bf16` where the run's device is a CPU with native bf16, `f32`
    /// elsewhere (a GPU, or a CPU without it): for configs meant to run anywhere.
    Auto,
}

/// `[perf]`: how the numbers are computed, not the algorithm (see
/// `src/perf.rs`, and the book's Performance chapter for what each costs in accuracy).
/// On by default where they apply: the two bit-exact paths, and on a CPU
/// `channels_last`, the attack and the student's update in bf16; the online
/// teacher in bf16 is opt-in.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PerfConfig {
    /// Keep 4-d convolution weights and model inputs in channels-last (NHWC)
    /// memory format, for the student, its attack replica and the teacher.
    /// Unset (the default): on a CPU, off elsewhere; `true` is refused off a CPU.
    pub channels_last: Option<bool>,
    /// `f32`, `bf16` or `auto` for the training attack on the student (it
    /// needs only the sign of the input gradient).
    pub attack_dtype: ComputeDtype,
    /// `f32`, `bf16` or `auto` for the student's forward and backward passes
    /// in its update: a bf16 compute copy of the student whose gradients,
    /// cast to f32, update the f32 master weights with an f32 SGD step (what
    /// `torch.autocast` gives a PyTorch loop).
    pub student_dtype: ComputeDtype,
    /// `f32`, `bf16` or `auto` for the online teacher's forward (soft labels
    /// computed on every batch, `teacher.soft_labels = "online"`). A soft-label
    /// cache always holds what the plain f32 teacher computes (NCHW, whatever
    /// `channels_last` says), so a cached run and its cache file do not depend
    /// on either.
    pub teacher_dtype: ComputeDtype,
    /// ARD at alpha = 1 runs the student's clean forward only for BatchNorm's
    /// running statistics (its loss term has weight 0, as in ARD's code): run
    /// it without recording a graph. The same weights bit for bit, one
    /// backward pass and the clean forward's activations less. Unset (the
    /// default): on wherever it applies; `true`: on, and refused where it
    /// does not apply; `false`: off.
    pub clean_forward_no_grad: Option<bool>,
    /// glibc malloc (Linux): one arena for all threads, and freed memory kept
    /// for reuse instead of handed back to the OS, so that libtorch's large
    /// per-step buffers stop costing fresh zeroed pages (page faults) on
    /// every step. Process-wide, applied when a run starts. On by default.
    pub malloc_reuse: bool,
    /// CUDA only: fp16 autocast (tensor cores; a T4 has them for fp16, not
    /// bf16) for the training attack and the student's forward passes, with
    /// dynamic loss scaling of the student's update (a skipped step on
    /// overflow). Refused on a CPU, where autocast does nothing (bf16 there
    /// is `attack_dtype`).
    pub amp: bool,
}

impl Default for PerfConfig {
    fn default() -> Self {
        Self {
            channels_last: None,
            attack_dtype: ComputeDtype::Auto,
            student_dtype: ComputeDtype::Auto,
            teacher_dtype: ComputeDtype::F32,
            clean_forward_no_grad: None,
            malloc_reuse: true,
            amp: false,
        }
    }
}

impl PerfConfig {
    /// Whether the student's clean forward runs without a graph where the
    /// loss uses it only for BatchNorm statistics.
    pub fn clean_forward_without_graph(&self) -> bool {
        self.clean_forward_no_grad.unwrap_or(true)
    }
}

/// What the catastrophic-overfitting guard does about a collapse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    /// No guard.
    #[default]
    Off,
    /// Log a warning naming the epoch and the numbers.
    Warn,
    /// Warn, stop training, and make the best-by-validation checkpoint the final result.
    Stop,
}

/// `[guard]`: watches 1-step training for catastrophic overfitting. After every
/// epoch it evaluates the validation split under `eval.validation_attack` and
/// the training attack; a collapse is robust accuracy `max_drop` points or
/// more below its best so far while training-attack accuracy rose (or held)
/// since then (see `src/train/overfit_guard.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// `off`, `warn` or `stop`.
    pub action: GuardAction,
    /// Percentage points below the best robust accuracy that count as a collapse.
    pub max_drop: Real,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            action: GuardAction::Off,
            max_drop: Real(10.0),
        }
    }
}
