//! `ard-pipeline export`: checks the inputs, has `scripts/export_onnx.py`
//! write the ONNX files into a staging folder inside `--out`, verifies them,
//! measures their robustness and edge figures, writes the card, and only then
//! renames everything into `--out`. Any error or signal removes the staging
//! folder, so `--out` never holds a half-written model; a staging folder left
//! by an export that died is removed by the next one. `--out` must be empty or
//! hold an earlier export of the same checkpoint: a user's own files there are
//! never replaced.

use super::card::{Card, Edge, EdgeRow, ExportFacts, FileFacts, Source, Verification, TRUST};
use super::interrupt::{self, Interrupt};
use super::runtime::{self, OnnxModel};
use super::verify;
use crate::config::Config;
use crate::data::{self, SplitKind};
use crate::error::{Error, Result};
use crate::eval::edge::{self, LatencyOptions};
use crate::eval::EvalSet;
use crate::models::{Arch, Model};
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::Device;

/// The files `export` writes into `--out`.
pub const FP32_FILE: &str = "model.onnx";
pub const INT8_FILE: &str = "model.int8.onnx";
pub const CARD_JSON: &str = "card.json";
pub const CARD_MD: &str = "card.md";
/// Staging folders are `--out/.export-PID`.
const STAGING_PREFIX: &str = ".export-";

/// What `ard-pipeline export` was asked to do.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub arch: Arch,
    pub weights: PathBuf,
    pub out: PathBuf,
    /// Training images to calibrate the int8 model on (None: no int8 model).
    pub int8_calibration: Option<usize>,
    /// Test images for the verification and the robustness card.
    pub test_images: usize,
    /// Square queries per image (0: no robustness section).
    pub square_queries: usize,
    /// Measure latency and peak memory.
    pub latency: Option<LatencyOptions>,
    /// The ONNX Runtime library (default: ORT_DYLIB_PATH, then the venv's).
    pub onnxruntime: Option<PathBuf>,
    pub python: PathBuf,
    pub script: PathBuf,
    /// This binary, for the latency child processes.
    pub exe: PathBuf,
}

/// What an export produced.
#[derive(Debug)]
pub struct Exported {
    pub card: Card,
    pub out: PathBuf,
}

/// A hidden folder inside `--out` that is removed unless installed.
pub(crate) struct Staging {
    dir: PathBuf,
    pub(crate) out: PathBuf,
}

impl Staging {
    /// Checks `out` (see [`check_out_folder`]) after removing the staging
    /// folders of dead exports there, then creates this process's own.
    pub(crate) fn create(out: &Path, weights: &Path, weights_sha: &str) -> Result<Staging> {
        let unwritable = |e: std::io::Error| {
            Error::Usage(format!(
                "export --out {}: cannot write there: {e}",
                out.display()
            ))
        };
        if out.exists() && !out.is_dir() {
            return Err(Error::Usage(format!(
                "export --out {}: is a file, not a folder",
                out.display()
            )));
        }
        std::fs::create_dir_all(out).map_err(unwritable)?;
        remove_dead_staging(out)?;
        check_out_folder(out, weights, weights_sha)?;
        let dir = out.join(format!("{STAGING_PREFIX}{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(unwritable)?;
        }
        std::fs::create_dir(&dir).map_err(unwritable)?;
        Ok(Staging {
            dir,
            out: out.to_path_buf(),
        })
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Renames `names` into `--out` (each rename atomic) and removes `stale`
    /// files of an earlier export there, then the staging folder.
    pub(crate) fn install(self, names: &[&str], stale: &[&str]) -> Result<()> {
        for name in stale {
            let old = self.out.join(name);
            if old.exists() {
                std::fs::remove_file(&old).map_err(|e| Error::io(&old, e))?;
            }
        }
        for name in names {
            let to = self.out.join(name);
            std::fs::rename(self.path(name), &to).map_err(|e| Error::io(&to, e))?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The process id of a staging folder's name (`.export-PID`).
fn staging_pid(name: &str) -> Option<u32> {
    name.strip_prefix(STAGING_PREFIX)?.parse().ok()
}

/// Whether process `pid` is an `ard-pipeline export` (not a process that
/// reused the id of one that died).
fn is_live_export(pid: u32) -> bool {
    if !interrupt::alive(pid) {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => cmdline.split(|&b| b == 0).any(|arg| arg == b"export"),
        Err(_) => true,
    }
}

/// Removes `out/.export-PID` folders whose export process is gone (it was
/// killed); refuses when another export is writing into `out` now.
fn remove_dead_staging(out: &Path) -> Result<()> {
    let entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = staging_pid(&name) else {
            continue;
        };
        if pid == std::process::id() || !entry.path().is_dir() {
            continue;
        }
        if is_live_export(pid) {
            return Err(Error::Usage(format!(
                "export --out {}: another export (process {pid}) is writing there now; \
                 wait for it or choose another folder",
                out.display()
            )));
        }
        let path = entry.path();
        std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        log::info!(
            "export: removed {}, left by an export that was stopped (process {pid} is gone)",
            path.display()
        );
    }
    Ok(())
}

/// The files of an export that say which checkpoint it came from, and where
/// in each the checkpoint's sha256 is.
const MARKERS: [(&str, [&str; 2]); 2] = [
    (CARD_JSON, ["source", "sha256"]),
    (super::robustbench::INFO_FILE, ["checkpoint", "sha256"]),
];

/// `out` may be written into when it is empty or holds an earlier export of
/// the same checkpoint (its card.json or model_info.json records the
/// checkpoint's sha256); anything else is a user's folder and is refused.
fn check_out_folder(out: &Path, weights: &Path, weights_sha: &str) -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| staging_pid(n).is_none())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let refuse = |why: String| {
        Err(Error::Usage(format!(
            "export --out {}: {why}; nothing was written (give an empty or new folder)",
            out.display()
        )))
    };
    let mut found = false;
    for (marker, [section, key]) in MARKERS {
        let path = out.join(marker);
        if !path.is_file() {
            continue;
        }
        let recorded = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v[section][key].as_str().map(str::to_string));
        match recorded {
            Some(sha) if sha == weights_sha => found = true,
            Some(sha) => {
                return refuse(format!(
                "holds the export of another checkpoint ({marker}: sha256 {}..., not {}'s {}...)",
                &sha[..sha.len().min(12)],
                weights.display(),
                &weights_sha[..12]
            ))
            }
            None => return refuse(format!("holds a {marker} that is not an export's")),
        }
    }
    if found {
        return Ok(());
    }
    let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
    let more = names.len() - shown.len();
    refuse(format!(
        "holds files that are not an export of {} ({}{})",
        weights.display(),
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ))
}

/// What `out` holds now (its visible entries), for the message of an
/// interrupted export.
pub fn kept_in(out: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(out)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        format!("{} holds nothing of it", out.display())
    } else {
        format!(
            "{} holds what it held before ({})",
            out.display(),
            names.join(", ")
        )
    }
}

pub use crate::data::checksum::sha256;

fn file_bytes(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len())
}

/// The last non-empty line of a child process's stderr, or `otherwise`.
fn last_line(stderr: &[u8], otherwise: &str) -> String {
    let stderr = String::from_utf8_lossy(stderr);
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
    last.unwrap_or(otherwise).to_string()
}

/// A Python step of an export: `python script args...`.
pub(crate) struct Script<'a> {
    pub python: &'a Path,
    pub script: &'a Path,
    pub args: &'a [String],
}

/// Runs a Python step (ended with the export on a signal); its last stderr
/// line becomes the error, its last stdout line that is a JSON object the result.
pub(crate) fn run_python<T: serde::de::DeserializeOwned>(
    step: &Script,
    interrupt: &Interrupt,
) -> Result<T> {
    let failed = |what: String| {
        Error::Process(format!(
            "export: {} {}: {what}",
            step.python.display(),
            step.script.display()
        ))
    };
    if !step.script.is_file() {
        return Err(failed(
            "no such script (run from the repository root)".into(),
        ));
    }
    let output = interrupt
        .output(Command::new(step.python).arg(step.script).args(step.args))?
        .map_err(|e| {
            failed(format!(
                "cannot start ({e}); run `bash scripts/bootstrap.sh` to create the venv"
            ))
        })?;
    if !output.status.success() {
        let last = last_line(&output.stderr, "no message");
        return Err(failed(format!("failed ({}): {last}", output.status)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line).map_err(|e| failed(format!("unreadable report ({e}): {line:?}")))
}

/// The checkpoint at `weights` of `arch`, loaded strictly, with its sha256,
/// refused when it gives the same logits for every test image of `set`.
pub(crate) fn load_checked(
    arch: Arch,
    weights: &Path,
    set: &EvalSet,
    out: &Path,
) -> Result<(Model, String)> {
    let model = Model::load(arch, Device::Cpu, weights)?;
    if let Some(why) = verify::degenerate(&model, set)? {
        return Err(crate::checkpoint::ckpt_err(
            weights,
            format!(
                "{why}: not a trained model, refused; nothing was written to {}",
                out.display()
            ),
        ));
    }
    Ok((model, sha256(weights)?))
}

/// The first `n` training images as safetensors `images` at `path`.
fn write_calibration(cfg: &Config, n: usize, path: &Path) -> Result<()> {
    let train = data::load_split(&cfg.data.root, SplitKind::Train, cfg.data.checksums)?;
    let set = EvalSet::from_split(&train.prefix(n))?;
    crate::checkpoint::write_atomic(path, &[("images".to_string(), set.images)])
}

/// Latency and peak memory of `model` in a fresh process of this binary
/// (`ard-pipeline latency-child`): the process holds nothing but that model.
fn latency_in_child(
    opts: &ExportOptions,
    model: &Path,
    arch: Option<Arch>,
    threads: usize,
    latency: &LatencyOptions,
    interrupt: &Interrupt,
) -> Result<super::ChildLatency> {
    let mut cmd = Command::new(&opts.exe);
    cmd.arg("latency-child")
        .arg("--model")
        .arg(model)
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--batches")
        .arg(
            latency
                .batch_sizes
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
        .arg("--runs")
        .arg(latency.runs.to_string());
    if let Some(arch) = arch {
        cmd.arg("--arch").arg(arch.to_string());
    }
    if let Some(lib) = &opts.onnxruntime {
        cmd.arg("--onnxruntime").arg(lib);
    }
    let output = interrupt.output(&mut cmd)?.map_err(|e| {
        Error::Process(format!(
            "latency of {}: cannot start {}: {e}",
            model.display(),
            opts.exe.display()
        ))
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(Error::Process(format!(
            "latency of {}: {}",
            model.display(),
            last_line(&output.stderr, "failed")
        )));
    }
    serde_json::from_str(stdout.trim()).map_err(|e| {
        Error::Process(format!(
            "latency of {}: unreadable report ({e})",
            model.display()
        ))
    })
}

/// Runs `ard-pipeline export`; a signal given to `interrupt` ends its child
/// processes and stops it ([`Error::Cancelled`]) with `--out` as it was.
pub fn run(cfg: &Config, opts: &ExportOptions, interrupt: &Interrupt) -> Result<Exported> {
    check_counts(opts)?;
    crate::perf::configure_process(cfg);
    let threads = tch::get_num_threads().max(1) as usize;
    // Every check that needs no work comes before the export.
    runtime::load(opts.onnxruntime.as_deref())?;
    let set = EvalSet::test(&cfg.data, Some(opts.test_images))?;
    let (model, weights_sha) = load_checked(opts.arch, &opts.weights, &set, &opts.out)?;
    let staging = Staging::create(&opts.out, &opts.weights, &weights_sha)?;

    let fp32_path = staging.path(FP32_FILE);
    let int8_path = staging.path(INT8_FILE);
    let args = script_args(cfg, opts, &staging, &fp32_path, &int8_path)?;
    log::info!("export: {} from {}", opts.arch, opts.weights.display());
    let script = Script {
        python: &opts.python,
        script: &opts.script,
        args: &args,
    };
    let facts: ExportFacts = run_python(&script, interrupt)?;

    let mut fp32 = OnnxModel::open(&fp32_path, threads)?;
    let mut int8 = opts
        .int8_calibration
        .map(|_| OnnxModel::open(&int8_path, threads))
        .transpose()?;
    let batch = cfg.data.batch_size.max(1);
    let verification = verify::verify(&model, &mut fp32, int8.as_mut(), &set, batch)?;
    check_verification(&verification, opts)?;
    interrupt.check()?;
    let robustness = (opts.square_queries > 0)
        .then(|| {
            let spec = verify::RobustnessSpec {
                cfg,
                square_queries: opts.square_queries,
                interrupt,
            };
            verify::robustness(&model, &mut fp32, int8.as_mut(), &set, &spec)
        })
        .transpose()?;
    drop((fp32, int8));

    let mut files = vec![file_facts(FP32_FILE, "fp32", &fp32_path)?];
    if opts.int8_calibration.is_some() {
        files.push(file_facts(INT8_FILE, "int8", &int8_path)?);
    }
    let weights_bytes = file_bytes(&opts.weights)?;
    let edge = match &opts.latency {
        Some(latency) => {
            let mut subjects = vec![
                (
                    "tch fp32",
                    "libtorch",
                    &*opts.weights,
                    Some(opts.arch),
                    weights_bytes,
                ),
                (
                    "onnx fp32",
                    "onnxruntime",
                    &*fp32_path,
                    None,
                    files[0].bytes,
                ),
            ];
            let int8 = files.get(1).map(|f| f.bytes);
            subjects.extend(int8.map(|b| ("onnx int8", "onnxruntime", &*int8_path, None, b)));
            Some(measure_edge(opts, latency, threads, &subjects, interrupt)?)
        }
        None => None,
    };
    let card = Card {
        arch: opts.arch.to_string(),
        parameters: model.num_parameters().max(0) as u64,
        macs_per_image: edge::macs_per_image(opts.arch),
        source: Source {
            path: opts.weights.display().to_string(),
            sha256: weights_sha,
            bytes: weights_bytes,
        },
        input: "images: float32 [N, 3, 32, 32], RGB in [0, 1], N dynamic".into(),
        output: "logits: float32 [N, 10] (CIFAR-10 classes)".into(),
        export: facts,
        files,
        verification,
        robustness,
        edge,
        trust: TRUST.into(),
    };
    let out = staging.out.clone();
    install_with_card(staging, opts, &card, interrupt)?;
    Ok(Exported { card, out })
}

/// Refuses image counts outside the splits before anything is loaded.
fn check_counts(opts: &ExportOptions) -> Result<()> {
    let train_images = SplitKind::Train.num_images();
    if let Some(n) = opts.int8_calibration {
        if n == 0 || n > train_images {
            return Err(Error::Usage(format!(
                "export --calibration {n}: must be between 1 and {train_images} (the training split)"
            )));
        }
    }
    if opts.test_images == 0 || opts.test_images > SplitKind::Test.num_images() {
        return Err(Error::Usage(format!(
            "export --test-images {}: must be between 1 and {}",
            opts.test_images,
            SplitKind::Test.num_images()
        )));
    }
    Ok(())
}

/// The export script's arguments; with int8, the calibration images are
/// written into the staging folder first.
fn script_args(
    cfg: &Config,
    opts: &ExportOptions,
    staging: &Staging,
    fp32_path: &Path,
    int8_path: &Path,
) -> Result<Vec<String>> {
    let mut args = vec![
        "--arch".to_string(),
        opts.arch.to_string(),
        "--weights".into(),
        opts.weights.display().to_string(),
        "--fp32".into(),
        fp32_path.display().to_string(),
    ];
    if let Some(n) = opts.int8_calibration {
        let calibration = staging.path("calibration.safetensors");
        data::ensure_cifar10(&cfg.data)?;
        write_calibration(cfg, n, &calibration)?;
        args.extend([
            "--int8".into(),
            int8_path.display().to_string(),
            "--calibration".into(),
            calibration.display().to_string(),
        ]);
    }
    Ok(args)
}

/// An fp32 file that does not compute what the weights compute is refused; an
/// int8 file that misses its targets is kept with a warning.
fn check_verification(verification: &Verification, opts: &ExportOptions) -> Result<()> {
    if !verification.fp32.pass {
        return Err(Error::Onnx(format!(
            "export: the ONNX file does not compute what {} computes (max |logit difference| \
             {:.3e} at scale {:.2}, top-1 agreement {:.2}%); nothing was written to {}",
            opts.weights.display(),
            verification.fp32.max_abs_diff,
            verification.fp32.logit_scale,
            verification.fp32.top1_agreement,
            opts.out.display()
        )));
    }
    if let Some(q) = verification.int8.as_ref().filter(|q| !q.pass) {
        log::warn!(
            "export: the int8 model misses its targets (agreement {:.2}%, accuracy drop {:.2} points); \
             try more calibration images",
            q.top1_agreement,
            q.drop
        );
    }
    Ok(())
}

fn file_facts(name: &str, precision: &str, path: &Path) -> Result<FileFacts> {
    Ok(FileFacts {
        name: name.into(),
        precision: precision.into(),
        bytes: file_bytes(path)?,
        sha256: sha256(path)?,
    })
}

/// A model whose latency is measured: name, runtime, file, architecture (for
/// weights) and file size.
type LatencySubject<'a> = (&'static str, &'static str, &'a Path, Option<Arch>, u64);

/// Latency and peak memory of each subject, each in a process of its own.
fn measure_edge(
    opts: &ExportOptions,
    latency: &LatencyOptions,
    threads: usize,
    subjects: &[LatencySubject],
    interrupt: &Interrupt,
) -> Result<Edge> {
    log::info!("export: latency and peak memory, {threads} threads");
    let mut rows = Vec::new();
    for &(name, runtime, path, arch, bytes) in subjects {
        let child = latency_in_child(opts, path, arch, threads, latency, interrupt)?;
        rows.push(EdgeRow {
            model: name.into(),
            runtime: runtime.into(),
            file_bytes: bytes,
            latency: child.latency,
            baseline_rss_mb: Some(child.baseline_rss_mb),
            peak_rss_mb: Some(child.peak_rss_mb),
        });
    }
    Ok(Edge {
        cpu: crate::bench::Machine::probe().cpu,
        threads,
        rows,
    })
}

/// Writes the card into the staging folder and moves every file into `--out`
/// (an int8 file of an earlier export is removed when this one has none).
fn install_with_card(
    staging: Staging,
    opts: &ExportOptions,
    card: &Card,
    interrupt: &Interrupt,
) -> Result<()> {
    let json = serde_json::to_string_pretty(card).map_err(Error::json("the model card"))?;
    let json_path = staging.path(CARD_JSON);
    std::fs::write(&json_path, json + "\n").map_err(|e| Error::io(&json_path, e))?;
    let md_path = staging.path(CARD_MD);
    std::fs::write(&md_path, card.markdown()).map_err(|e| Error::io(&md_path, e))?;
    let (mut names, mut stale) = (vec![FP32_FILE], Vec::new());
    if opts.int8_calibration.is_some() {
        names.push(INT8_FILE);
    } else {
        stale.push(INT8_FILE);
    }
    names.extend([CARD_JSON, CARD_MD]);
    interrupt.check()?;
    staging.install(&names, &stale)
}
