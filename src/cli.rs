//! Command-line interface: subcommands and their flags. The config file
//! describes the experiment; flags only change how it runs.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Fast adversarial robust distillation (ARD) on CIFAR-10.
#[derive(Debug, Parser)]
#[command(name = "ard-pipeline", version, about, long_about = None)]
pub struct Cli {
    /// Config file of the run to train when no subcommand is given (a path,
    /// or a name under configs/); before a subcommand, that subcommand's --config.
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// Log level (error, warn, info, debug).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train as the config says (the default command).
    Run(RunCommandArgs),
    /// Check a config's structure (types, ranges, consistency) without touching data or devices.
    Validate(ValidateArgs),
    /// What this binary was built with and loaded (libtorch, CUDA, cuDNN), the
    /// devices and CPU here, and whether --config can run here (its device,
    /// data and weights); exits non-zero when it cannot.
    Doctor(DoctorArgs),
    /// Evaluate a checkpoint: natural accuracy and accuracy under attacks.
    Eval(EvalArgs),
    /// Fill the teacher soft-label cache ahead of training (`merge` joins shards).
    SoftLabels(SoftLabelsArgs),
    /// Run a sweep file (a base config plus a grid or rows) on a backend: local
    /// processes, a Ray cluster, or a rendered Kubernetes Indexed Job.
    Sweep(SweepArgs),
    /// Write report.md, report.csv and plots of a sweep folder (the paper's Table 2 layout).
    Report(ReportArgs),
    /// Export a student for deployment: an ONNX model (BatchNorm folded) and
    /// optionally an int8 one, checked in ONNX Runtime against the trained
    /// model, with a card of their robustness, sizes, latency and memory.
    Export(ExportArgs),
    /// Latency and memory of one model in a process of its own (what `export` starts).
    #[command(hide = true)]
    LatencyChild(LatencyChildArgs),
    /// Training throughput, side by side: the PyTorch reference loop, the
    /// pipeline and the sequential trainer, with the pipeline's per-stage
    /// breakdown (base settings from --config, default configs/bench.toml).
    Bench(BenchArgs),
    /// One run of a bench: `--side pipeline|sequential RUN_CONFIG` (what `bench` starts per run).
    #[command(hide = true)]
    BenchRun(BenchRunArgs),
    /// Run one row of a sweep (what a Kubernetes pod of the sweep's Indexed Job runs).
    #[command(hide = true)]
    SweepRun(SweepRunArgs),
    /// The CIFAR-10 files: `data fetch` downloads them (md5-checked) into data/.
    Data(DataArgs),
    /// Print the configuration reference (Markdown) generated from the config
    /// types: `ard-pipeline config-reference > docs/src/configuration-reference.md`.
    #[command(hide = true)]
    ConfigReference,
}

/// The maximum of a flag counting test images.
pub const TEST_IMAGES: u64 = 10_000;
/// The maximum of a flag counting training images.
pub const TRAIN_IMAGES: u64 = 50_000;

/// A count flag's parser: refuses values outside 1..=`max` with one line
/// naming the flag, the value and the range (never clamps).
fn count_up_to(max: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..=max)
}

#[derive(Debug, Clone, Args)]
pub struct RunCommandArgs {
    /// Config file of the run to train (a path, or a name under configs/).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// Config file to check (a path, or a name under configs/).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub action: DataAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DataAction {
    /// Download the official CIFAR-10 archive, check its md5 and install its
    /// files in --root (nothing to do when they are there).
    Fetch(FetchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct FetchArgs {
    /// Folder to fill, the configs' data.root (created; never left half-written).
    #[arg(long, default_value = "data/cifar-10-batches-bin")]
    pub root: PathBuf,
    /// Where to download the archive from (a mirror; its md5 is checked all the same).
    #[arg(long, default_value = ard_pipeline::data::URL)]
    pub url: String,
}

#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// Sweep file to run: a base config plus a grid or rows (a path, or a name under configs/).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override the sweep file's backend.
    #[arg(long, value_enum)]
    pub backend: Option<SweepBackend>,
    /// Rerun the finished rows whose settings changed since they ran (their
    /// run folders move to NAME.previous-N); without it they are refused.
    #[arg(long)]
    pub fresh: bool,
    /// Expand and validate every row, say which would run, be skipped or be
    /// refused, then stop: nothing is written or started.
    #[arg(long)]
    pub dry_run: bool,
}

/// Sweep engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SweepBackend {
    Local,
    Ray,
    K8s,
}

impl From<SweepBackend> for ard_pipeline::sweep::Backend {
    fn from(b: SweepBackend) -> Self {
        match b {
            SweepBackend::Local => Self::Local,
            SweepBackend::Ray => Self::Ray,
            SweepBackend::K8s => Self::K8s,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The sweep folder (sweep.out_dir/sweep.name).
    pub sweep_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct SweepRunArgs {
    /// A sweep file: run its row INDEX.
    #[arg(long, conflicts_with = "configs")]
    pub sweep: Option<PathBuf>,
    /// A folder of rendered run configs (INDEX.toml, the k8s ConfigMap).
    #[arg(long)]
    pub configs: Option<PathBuf>,
    /// The row (default: $JOB_COMPLETION_INDEX).
    #[arg(long)]
    pub index: Option<usize>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Which engine runs the training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// The five-stage actor pipeline.
    Pipeline,
    /// One thread, one step after the other (the semantic reference).
    Sequential,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Training engine.
    #[arg(long, value_enum, default_value_t = Engine::Pipeline)]
    pub engine: Engine,
    /// Resolve and validate the config, build models and read data, then stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue from the checkpoint in the run folder (an error if there is none).
    #[arg(long, conflicts_with = "fresh")]
    pub resume: bool,
    /// Start afresh even if the run folder holds an unfinished checkpoint.
    #[arg(long)]
    pub fresh: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Config file whose device, data and weights to check here (without one,
    /// only the build and this machine are described).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Also write the findings as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub action: Option<EvalAction>,
    /// Config file the defaults of the flags below come from (student arch,
    /// data root, device, batch size, test limit, [perf]); without one, the
    /// built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Architecture, e.g. mobilenet_v2, resnet18, wrn34_10 (default: the config's student).
    #[arg(long)]
    pub arch: Option<String>,
    /// Weights (safetensors). Without them only --latency works (on a fresh model).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Comma-separated evaluations: natural, train_attack, fgsm, pgdK, cw[K],
    /// apgd_ce[K], apgd_dlr[K], apgd_t[K], fab_t[K], square[K], autoattack
    /// (AutoAttack standard: apgd_ce, apgd_t, fab_t, square as a cascade);
    /// _rR adds R restarts (pgd20_r5). The table and JSON list them in this
    /// order, then worst_case: right clean and under every one (natural always
    /// counts). The default is clean accuracy, PGD-20 and APGD-CE: a first
    /// robustness number; add apgd_t, or run autoattack, for a stronger one.
    #[arg(long, default_value = ard_pipeline::eval::command::DEFAULT_ATTACKS)]
    pub attacks: String,
    /// The L-inf radius on [0, 1] images, as a fraction or a decimal: 8/255
    /// or 0.0314 (default: the config's attack.eps). The training attack that
    /// train_attack replays keeps its step as a share of eps.
    #[arg(long, value_name = "EPS", value_parser = parse_eps)]
    pub eps: Option<f64>,
    /// AutoAttack's protocol: natural first, then the evaluations in the
    /// order given, each only on the images still right under the earlier
    /// ones. Same worst case, much cheaper with the strong attacks last; each
    /// row is then cumulative (right under it and every row above).
    #[arg(long)]
    pub cascade: bool,
    /// Evaluate the first N test images only (1 to 10,000; a larger N is refused).
    #[arg(long, value_parser = count_up_to(TEST_IMAGES))]
    pub test_limit: Option<usize>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Save per-image results as safetensors here: the natural logits ([N, 10]),
    /// the labels, and per evaluation `correct.NAME` ([N] u8, 1 = right on it).
    #[arg(long)]
    pub save_logits: Option<PathBuf>,
    /// Dataset folder (default: the config's data.root).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Device (default: the config's run.device).
    #[arg(long)]
    pub device: Option<String>,
    /// Batch size (default: the config's data.batch_size).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Also report edge numbers: parameters, MACs per image, and inference
    /// latency (median of repeated runs after warm-up) on this machine.
    #[arg(long)]
    pub latency: bool,
    /// Batch sizes to time with --latency (1 to 4096 images each).
    #[arg(long, value_delimiter = ',', default_value = "1,128")]
    pub latency_batches: Vec<usize>,
    /// Timed runs per batch size with --latency (fewer if one batch size takes over 60 s).
    #[arg(long, default_value_t = 20)]
    pub latency_runs: usize,
    /// Evaluate only shard I of N (I from 0: contiguous whole batches of the
    /// images) and write a partial result to --json; `eval merge` joins the
    /// parts into the unsplit evaluation's table and JSON.
    #[arg(long, value_name = "I/N", requires = "json")]
    pub shard: Option<ard_pipeline::soft_labels::Shard>,
    /// Split the evaluation into N shards (1 to the number of batches), each
    /// `eval --shard I/N` in a process of its own on --backend, then join
    /// them into --json OUT as `eval merge` does. The parts and each shard's
    /// log go in the folder OUT.parts; the same command run again starts
    /// only the shards without a part, and refuses parts of another evaluation.
    #[arg(long, value_name = "N", value_parser = count_up_to(TEST_IMAGES))]
    pub shards: Option<usize>,
    /// With --shards: how many shards run at once (default: all of them); the
    /// cores are shared among them unless the config sets run.threads.
    #[arg(long, value_name = "P", value_parser = count_up_to(TEST_IMAGES))]
    pub parallel: Option<usize>,
    /// With --shards: where the shards run, local (child processes, the
    /// default) or ray (one Ray job each, through --ray-address); for k8s
    /// apply deploy/k8s/eval-shards-job.yaml instead.
    #[arg(long, value_enum)]
    pub backend: Option<SweepBackend>,
    /// With --shards --backend ray: the Ray dashboard's URL (Jobs API;
    /// default http://127.0.0.1:8265). The cluster must see the same files.
    #[arg(long, value_name = "URL")]
    pub ray_address: Option<String>,
    /// With --shards: extra attempts of a shard that failed (default 0).
    #[arg(long, value_name = "R")]
    pub retries: Option<usize>,
}

impl EvalArgs {
    /// The arguments of a shard of `eval --shards` before its `--shard I/N
    /// --json PART`: `eval`, the resolved `config`, and the flags given that
    /// say what to evaluate and how, each path through `absolute`.
    pub fn shard_args(
        &self,
        config: Option<&std::path::Path>,
        absolute: impl Fn(&std::path::Path) -> PathBuf,
    ) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["eval".into()];
        let mut path = |flag: &str, p: Option<&std::path::Path>| {
            if let Some(p) = p {
                args.extend([flag.into(), absolute(p).into_os_string()]);
            }
        };
        path("--config", config);
        path("--weights", self.weights.as_deref());
        path("--data-root", self.data_root.as_deref());
        let values = [
            ("--arch", self.arch.clone()),
            ("--attacks", Some(self.attacks.clone())),
            ("--eps", self.eps.map(|e| e.to_string())),
            ("--test-limit", self.test_limit.map(|n| n.to_string())),
            ("--device", self.device.clone()),
            ("--batch-size", self.batch_size.map(|b| b.to_string())),
        ];
        for (flag, value) in values {
            if let Some(v) = value {
                args.extend([flag.into(), v.into()]);
            }
        }
        args
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum EvalAction {
    /// Join the partial results of `eval --shard I/N` (same checkpoint,
    /// evaluations, eps and images; every image once) into one result.
    Merge(EvalMergeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct EvalMergeArgs {
    /// The partial results (JSON files written by `eval --shard`).
    #[arg(required = true)]
    pub parts: Vec<PathBuf>,
    /// Write the joined result here.
    #[arg(long)]
    pub json: PathBuf,
}

#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SoftLabelsArgs {
    /// Config file of the run whose soft-label cache to fill (its teacher,
    /// data, views and cache file).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Fill only shard I of N (I from 0: a contiguous range of images) into
    /// the partial file CACHE.shard-I-of-N; `soft-labels merge` joins them.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<ard_pipeline::soft_labels::Shard>,
    #[command(subcommand)]
    pub action: Option<SoftLabelsAction>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum SoftLabelsAction {
    /// Join shard files into the full cache file, checking they agree and cover every image once.
    Merge(MergeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Shard files (default: every CACHE.shard-I-of-N beside the config's cache file).
    pub shards: Vec<PathBuf>,
    /// The merged file (default: the config's cache file).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Config file of the run whose cache file the shards are joined into
    /// (where the shards are looked for, and --output's default).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Base config of every timed run (default configs/bench.toml); the flags
    /// below vary teacher, steps, soft labels and variant around it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Teachers, each optionally with its batches per run: wrn16_4=3,wrn34_10=2.
    #[arg(long, value_delimiter = ',', default_value = "wrn16_4,wrn34_10")]
    pub teachers: Vec<String>,
    /// Batches per run, for teachers given without their own count.
    #[arg(long, default_value_t = 2)]
    pub batches: usize,
    /// Attack steps.
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    pub steps: Vec<usize>,
    /// Soft-label sources: online (a teacher forward per batch), cached (filled before timing).
    #[arg(long, value_delimiter = ',', default_value = "online,cached")]
    pub soft_labels: Vec<String>,
    /// Who trains: reference (plain PyTorch), tuned_reference (PyTorch as a careful user tunes it), pipeline, sequential.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "reference,tuned_reference,pipeline,sequential"
    )]
    pub sides: Vec<String>,
    /// How the Rust sides run: defaults (the config's [perf] as it is), fp32 (the rounding fast paths pinned off), channels_last, bf16 (the attack), bf16_student, bf16_teacher, no_grad_clean, graph_clean, malloc_reuse, no_malloc_reuse, shared, per_stage, threads=N, or +-joined (fp32+channels_last).
    #[arg(long, value_delimiter = ',', default_value = "defaults")]
    pub variants: Vec<String>,
    /// Repetitions of every case (the order of the sides flips on each).
    #[arg(long, default_value_t = 1)]
    pub reps: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Python with PyTorch, for the reference.
    #[arg(long, default_value = ".venv/bin/python")]
    pub python: PathBuf,
    /// The reference loop.
    #[arg(long, default_value = "scripts/bench_reference.py")]
    pub reference_script: PathBuf,
    /// Keep weights, caches and run folders here (default: a temporary folder, removed).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct BenchRunArgs {
    /// pipeline or sequential.
    #[arg(long)]
    pub side: String,
    /// The run's resolved config (written by `bench`).
    pub run_config: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Config file the data settings (data.root, checksums) and [perf] come
    /// from; without one, the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// CIFAR-10 folder of the test and calibration images (default: the config's data.root).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Architecture of the checkpoint, e.g. mobilenet_v2_x0.5, resnet18.
    #[arg(long)]
    pub arch: String,
    /// The checkpoint (safetensors).
    #[arg(long)]
    pub weights: PathBuf,
    /// Folder for model.onnx, model.int8.onnx, card.json and card.md (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write an int8 model (static quantization, per-channel weights).
    #[arg(long)]
    pub int8: bool,
    /// Training images the int8 activation ranges are calibrated on (never
    /// test images; 1 to 50,000, a larger number is refused).
    #[arg(long, requires = "int8", default_value_t = 1000, value_parser = count_up_to(TRAIN_IMAGES))]
    pub calibration: usize,
    /// Test images for the checks and the robustness card (the first N; 1 to
    /// 10,000, a larger N is refused).
    #[arg(long, default_value_t = 1000, value_parser = count_up_to(TEST_IMAGES))]
    pub test_images: usize,
    /// Square queries per image in the robustness card (AutoAttack's 5000); 0 leaves the robustness out.
    #[arg(long, default_value_t = 5000)]
    pub square_queries: usize,
    /// Leave out latency and peak memory.
    #[arg(long)]
    pub no_latency: bool,
    /// The ONNX Runtime library (default: $ORT_DYLIB_PATH, then the venv's onnxruntime package).
    #[arg(long)]
    pub onnxruntime: Option<PathBuf>,
    /// Python with PyTorch, onnx and onnxruntime, for the export itself.
    #[arg(long, default_value = ".venv/bin/python")]
    pub python: PathBuf,
    /// The export script.
    #[arg(long, default_value = "scripts/export_onnx.py")]
    pub script: PathBuf,
    /// What to write: onnx (the deployment files and card), or robustbench (a
    /// RobustBench entry: model.pt, a state_dict that loads strictly into
    /// RobustBench's class, and model_info.json; for MobileNetV2 also its
    /// definition, mobilenet_v2.py). robustbench takes --eval-json, not --int8.
    #[arg(long, value_enum, default_value_t = ExportFormat::Onnx)]
    pub format: ExportFormat,
    /// With --format robustbench: the JSON of `eval --json` on this
    /// checkpoint, for clean and AutoAttack accuracy (without it both are null).
    #[arg(long)]
    pub eval_json: Option<PathBuf>,
    /// The script of --format robustbench.
    #[arg(long, default_value = "scripts/export_robustbench.py")]
    pub robustbench_script: PathBuf,
}

/// What `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Onnx,
    Robustbench,
}

#[derive(Debug, Clone, Args)]
pub struct LatencyChildArgs {
    /// An ONNX file, or a safetensors checkpoint with --arch.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub arch: Option<String>,
    #[arg(long)]
    pub threads: usize,
    #[arg(long, value_delimiter = ',', default_value = "1,128")]
    pub batches: Vec<usize>,
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    #[arg(long)]
    pub onnxruntime: Option<PathBuf>,
}

/// `--eps`: a fraction (`8/255`) or a decimal in (0, 1].
fn parse_eps(text: &str) -> Result<f64, String> {
    let eps = ard_pipeline::config::parse_real(text)?;
    if eps > 0.0 && eps <= 1.0 {
        Ok(eps)
    } else if eps > 1.0 {
        Err(format!(
            "{eps} is above 1: images are on [0, 1], so give it in 255ths as {text}/255"
        ))
    } else {
        Err(format!("{eps} must be above 0"))
    }
}
