//! Command-line interface: subcommands and their flags. The config file
//! describes the experiment; flags only change how it runs.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Fast adversarial robust distillation (ARD) on CIFAR-10.
#[derive(Debug, Parser)]
#[command(name = "ard-pipeline", version, about, long_about = None)]
pub struct Cli {
    /// Config file (a path, or a name under configs/). Runs the job when no subcommand is given.
    #[arg(long, global = true)]
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
    Run(RunArgs),
    /// Check a config's structure (types, ranges, consistency) without touching data or devices.
    Validate,
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
}

#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// Override the sweep file's backend.
    #[arg(long, value_enum)]
    pub backend: Option<SweepBackend>,
}

/// Sweep engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SweepBackend {
    Local,
    Ray,
    K8s,
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
    /// Also write the findings as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Architecture, e.g. mobilenet_v2, resnet18, wrn34_10 (default: the config's student).
    #[arg(long)]
    pub arch: Option<String>,
    /// Weights (safetensors). Without them only --latency works (on a fresh model).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Comma-separated evaluations: natural, train_attack, fgsm, pgdK, cw[K],
    /// apgd_ce[K], apgd_dlr[K], apgd_t[K], fab_t[K], square[K], autoattack
    /// (AutoAttack standard: apgd_ce, apgd_t, fab_t, square as a cascade);
    /// _rR adds R restarts (pgd20_r5). The JSON also reports worst_case:
    /// right clean and under every one.
    #[arg(long, default_value = "natural")]
    pub attacks: String,
    /// AutoAttack's protocol: run the evaluations in the order given, each
    /// only on the images still right under the earlier ones. Same worst
    /// case, much cheaper with the strong attacks last; each accuracy then
    /// counts the images right under it and every earlier one.
    #[arg(long)]
    pub cascade: bool,
    /// Evaluate the first N test images only (N >= 1).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub test_limit: Option<usize>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Save the natural logits ([N, 10]) and labels as safetensors here.
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
    /// Batch sizes to time with --latency.
    #[arg(long, value_delimiter = ',', default_value = "1,128")]
    pub latency_batches: Vec<usize>,
    /// Timed runs per batch size with --latency (fewer if one batch size takes over 60 s).
    #[arg(long, default_value_t = 20)]
    pub latency_runs: usize,
}

#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SoftLabelsArgs {
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
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
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
    /// Training images the int8 activation ranges are calibrated on (never test images).
    #[arg(long, requires = "int8", default_value_t = 1000)]
    pub calibration: usize,
    /// Test images for the checks and the robustness card (the first N).
    #[arg(long, default_value_t = 1000)]
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
