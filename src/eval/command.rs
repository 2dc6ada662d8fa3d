//! `ard-pipeline eval`: evaluates a checkpoint on the CIFAR-10 test set under
//! the listed evaluations (default [`DEFAULT_ATTACKS`]), prints a table of
//! accuracies with their 95% intervals, then writes the JSON
//! ([`super::record::EvalFile`]) and per-image results asked for. The output paths
//! are checked before anything is computed ([`super::output`]) and written
//! atomically after the table is printed, so a long evaluation is never lost
//! to a bad path. With `--latency` it adds the edge numbers (parameters, MACs
//! per image, latency at batch 1 and 128); without weights only those.
//!
//! The config file gives eps (`attack.eps`, or `--eps`), the training attack
//! that `train_attack` replays, the seed of the random starts, the data folder
//! and the batch size; the other flags only change how the evaluation runs.

use super::edge::{edge_report, LatencyOptions};
use super::output::{check_outputs, Output};
use super::progress::EvalProgress;
use super::record::{AttackRecord, EvalFile};
use super::shards::{shard_range, ShardPart};
use super::{interval, EvalAttack, EvalMasks, EvalReport, EvalSet, Evaluation};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::models::{Arch, Model};
use crate::soft_labels::Shard;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Tensor};

/// What `eval` runs without `--attacks`: clean accuracy, PGD-20 and APGD-CE,
/// a worst case a reader can take for a first robustness number (AutoAttack
/// is the field's).
pub const DEFAULT_ATTACKS: &str = "natural,pgd20,apgd_ce";

/// The largest `--latency-batches` size: a MobileNetV2 forward takes about
/// 0.25 MB of activations per image, so 100,000 images asked for 24 GB and
/// the kernel killed the process.
pub const MAX_LATENCY_BATCH: usize = 4096;

/// What `ard-pipeline eval` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// Architecture (default: the config's student).
    pub arch: Option<Arch>,
    /// Weights (safetensors); None: edge numbers only, on a fresh model.
    pub weights: Option<PathBuf>,
    pub evals: Vec<EvalAttack>,
    /// Evaluate the first N test images only (default: `eval.test_limit`, then `data.test_limit`).
    pub test_limit: Option<usize>,
    /// Write the report as JSON here.
    pub json: Option<PathBuf>,
    /// Save per-image results as safetensors here ([`per_image`]).
    pub save_logits: Option<PathBuf>,
    pub data_root: Option<PathBuf>,
    pub device: Option<String>,
    pub batch_size: Option<usize>,
    /// Measure latency (and report the edge numbers).
    pub latency: Option<LatencyOptions>,
    /// AutoAttack's cascade ([`Evaluation::cascade`]): each evaluation only on
    /// the images still right under the earlier ones.
    pub cascade: bool,
    /// The L-inf radius (default: the config's `attack.eps`).
    pub eps: Option<f64>,
    /// Evaluate only this shard of the images and write a partial result
    /// ([`super::shards`]).
    pub shard: Option<Shard>,
}

/// What an evaluation produced: the table to print and the files to write.
#[derive(Debug)]
pub struct EvalOutcome {
    /// What `--json` gets (the report with its provenance).
    pub file: EvalFile,
    pub wall_s: f64,
    /// The per-image results `--save-logits` writes, by name.
    per_image: Option<Vec<(String, Tensor)>>,
    json: Option<PathBuf>,
    save_logits: Option<PathBuf>,
}

/// `eps` as `8/255` when it is a whole number of 255ths.
pub fn eps_text(eps: f64) -> String {
    let k = eps * 255.0;
    if (k - k.round()).abs() < 1e-6 {
        format!("{}/255", k.round())
    } else {
        format!("{eps}")
    }
}

impl EvalOutcome {
    /// The outcome of a merge of partial results: `file` to print and to
    /// write to `json`.
    pub fn merged(file: EvalFile, json: PathBuf, wall_s: f64) -> EvalOutcome {
        EvalOutcome {
            file,
            wall_s,
            per_image: None,
            json: Some(json),
            save_logits: None,
        }
    }

    /// The report.
    pub fn report(&self) -> &EvalReport {
        &self.file.report
    }

    /// The table `ard-pipeline eval` prints.
    pub fn table(&self) -> String {
        let f = &self.file;
        let r = &f.report;
        let mut s = String::new();
        if let Some(weights) = &f.weights {
            let images = match &f.shard {
                Some(p) => format!(
                    "test images {}..{} (shard {}/{} of the first {})",
                    p.start,
                    p.end,
                    p.index,
                    p.count,
                    interval::thousands(p.total as u64)
                ),
                None => format!(
                    "the first {} test images",
                    interval::thousands(r.images as u64)
                ),
            };
            s += &format!(
                "{} on {images}, L-inf eps {} ({weights}, {:.1} s)\n",
                f.arch, f.eps_text, self.wall_s
            );
            if r.cascade {
                s += "  cascade: natural first, then each evaluation only on the images right under every\n  \
                      row above; each row is cumulative: right clean and under it and every row above\n";
            }
            let head = if r.cascade {
                "cumulative accuracy"
            } else {
                "accuracy"
            };
            s += &format!("  {:<16} {:<30} {:>9}\n", "evaluation", head, "seconds");
            for name in r.accuracy.keys() {
                let sec = r.seconds.get(name).copied().unwrap_or(0.0);
                s += &format!("  {name:<16} {:<30} {sec:>9.1}\n", r.accuracy_text(name));
                for part in r.parts.get(name).into_iter().flatten() {
                    let label = match part.name.as_str() {
                        super::autoattack::CLEAN => part.name.clone(),
                        other => format!("after {other}"),
                    };
                    let acc = interval::accuracy_text(part.accuracy, r.images, 2);
                    s += &format!("    {label:<14} {acc:<30} {:>9.1}\n", part.seconds);
                }
            }
            s += &format!("  {:<16} {:<30}\n", "worst_case", r.worst_case_text());
            s += &format!(
                "  (worst case: right clean and under every one of {}; 95% Wilson intervals)\n",
                r.worst_case_over()
            );
            for flag in &r.flags {
                s += &format!("  warning: {}\n", flag.message);
            }
        }
        if let Some(edge) = &r.edge {
            s += &edge.lines();
        }
        s
    }

    /// Writes the files asked for, each atomically (a temporary file renamed
    /// into place): the JSON, then the per-image results.
    pub fn write(&self) -> Result<()> {
        if let Some(path) = &self.json {
            let text =
                serde_json::to_string_pretty(&self.file).map_err(Error::json("the eval report"))?;
            crate::atomic_file::write_text_atomic(path, &(text + "\n"))?;
        }
        if let (Some(path), Some(tensors)) = (&self.save_logits, &self.per_image) {
            crate::checkpoint::write_atomic(path, tensors)?;
        }
        Ok(())
    }
}

/// Natural logits of every image of `set`, on the CPU.
fn logits(model: &Model, set: &EvalSet, batch_size: usize) -> Result<Tensor> {
    let mut outs = Vec::new();
    for (_, idx) in set.batches(batch_size) {
        let (x, _) = set.rows(&idx, model.device())?;
        outs.push(tch::no_grad(|| model.forward_t(&x, false)).f_to_device(Device::Cpu)?);
    }
    Ok(Tensor::f_cat(&outs, 0)?)
}

/// Applies the flags to `cfg`: data folder, device, batch size and eps
/// (the training attack's step keeps its share of eps, so `train_attack`
/// stays the same attack at the new radius).
fn apply_flags(cfg: &mut Config, opts: &EvalOptions) -> Result<()> {
    if let Some(root) = &opts.data_root {
        cfg.data.root = root.clone();
    }
    if let Some(device) = &opts.device {
        cfg.run.device = device.clone();
    }
    if let Some(b) = opts.batch_size {
        cfg.data.batch_size = b;
    }
    if cfg.data.batch_size == 0 {
        return Err(Error::Usage(
            "eval: the batch size must be at least 1".into(),
        ));
    }
    if let Some(eps) = opts.eps {
        if !(eps > 0.0 && eps <= 1.0) {
            return Err(Error::Usage(format!(
                "eval --eps {eps}: must be in (0, 1] on [0, 1] images (e.g. 8/255)"
            )));
        }
        let old = cfg.attack.eps.get();
        let step = cfg.attack.step_size.get();
        cfg.attack.step_size = crate::config::Real(step * eps / old);
        cfg.attack.eps = crate::config::Real(eps);
    }
    Ok(())
}

/// Why `opts` cannot be split into shards (`--shard`, `--shards`), if it cannot.
pub fn unsplittable(opts: &EvalOptions) -> Option<&'static str> {
    if opts.cascade {
        Some("not with --cascade (its batches run over the survivors of all images)")
    } else if opts.latency.is_some() || opts.save_logits.is_some() {
        Some("not with --latency or --save-logits (run those unsplit)")
    } else {
        None
    }
}

/// Refuses what would fail or lose the result after the evaluation: output
/// paths ([`check_outputs`]) and latency batches too large to allocate.
fn check_before(cfg: &Config, opts: &EvalOptions) -> Result<()> {
    let mut outputs = Vec::new();
    if let Some(p) = &opts.json {
        outputs.push(Output {
            flag: "--json",
            path: p,
        });
    }
    if let Some(p) = &opts.save_logits {
        outputs.push(Output {
            flag: "--save-logits",
            path: p,
        });
    }
    let mut inputs: Vec<(&str, &Path)> = Vec::new();
    if let Some(w) = &opts.weights {
        inputs.push(("--weights", w));
    }
    if let Some(t) = &cfg.teacher.weights {
        inputs.push(("teacher.weights", t));
    }
    check_outputs(&outputs, &inputs)?;
    if let Some(shard) = opts.shard {
        let refuse = |why: &str| Err(Error::Usage(format!("eval --shard {shard}: {why}")));
        if opts.json.is_none() {
            return refuse("needs --json, the partial result `eval merge` joins");
        }
        if let Some(why) = unsplittable(opts) {
            return refuse(why);
        }
    }
    if let Some(latency) = &opts.latency {
        if let Some(b) = latency.batch_sizes.iter().find(|b| **b > MAX_LATENCY_BATCH) {
            return Err(Error::Usage(format!(
                "eval --latency-batches {b}: at most {MAX_LATENCY_BATCH} images per timed batch \
                 (about 0.25 MB of activations per image)"
            )));
        }
        if latency.batch_sizes.contains(&0) {
            return Err(Error::Usage(
                "eval --latency-batches 0: a batch holds at least 1 image".into(),
            ));
        }
    }
    Ok(())
}

/// Runs `ard-pipeline eval`: applies the flags to `cfg`, checks the outputs,
/// evaluates, and returns the outcome to print, then write
/// ([`EvalOutcome::write`]).
pub fn run(mut cfg: Config, opts: &EvalOptions) -> Result<EvalOutcome> {
    let began = Instant::now();
    apply_flags(&mut cfg, opts)?;
    check_before(&cfg, opts)?;
    let arch = opts.arch.unwrap_or(cfg.student.arch);
    let device = crate::device::resolve_device(&cfg.run.device)?;
    // Malloc reuse too: without it APGD-T spends about a third of its time
    // page-faulting fresh buffers in.
    crate::perf::configure_process(&cfg);
    let outcome = |report: EvalReport,
                   run: &[EvalAttack],
                   per_image,
                   shard: Option<ShardPart>|
     -> Result<EvalOutcome> {
        Ok(EvalOutcome {
            file: EvalFile {
                shard,
                ..eval_file(&cfg, opts, arch, run, report)?
            },
            wall_s: began.elapsed().as_secs_f64(),
            per_image,
            json: opts.json.clone(),
            save_logits: opts.save_logits.clone(),
        })
    };

    let Some(weights) = &opts.weights else {
        return outcome(latency_only(&cfg, opts, arch, device)?, &[], None, None);
    };

    let perf = cfg.perf.build(device)?;
    let mut model = Model::load(arch, device, weights)?;
    perf.prepare_for_evaluation(&mut model);
    let mut teacher = load_teacher(&cfg, opts, device)?;
    if let Some(t) = &mut teacher {
        perf.prepare_for_evaluation(t);
    }
    let limit = opts.test_limit.or(cfg.eval.test_limit);
    let set = EvalSet::test(&cfg.data, limit.or(cfg.data.test_limit))?;
    let (set, part) = match opts.shard {
        Some(shard) => shard_of(set, shard, cfg.data.batch_size)?,
        None => (set, None),
    };
    let run_order = run_order(&opts.evals, opts.cascade);
    log::info!(
        "eval: {arch} on {} test images, eps {}, {}{} ({} per batch, {device:?})",
        set.labels.size()[0],
        eps_text(cfg.attack.eps.get()),
        names(&run_order).join(", "),
        if opts.cascade { " as a cascade" } else { "" },
        cfg.data.batch_size
    );
    let job = Evaluation {
        model: &model,
        set: &set,
        evals: &opts.evals,
        train_attack: &cfg.attack,
        batch_size: cfg.data.batch_size,
        seed: cfg.run.seed,
        teacher: teacher.as_ref(),
    };
    let mut progress = EvalProgress::stderr();
    let tick = |label: &str, done, n| progress.tick(label, done, n);
    let masks = if opts.cascade {
        job.cascade(tick)
    } else {
        job.masks_at(part.map_or(0, |p| p.start), tick)
    };
    progress.finish();
    let masks = masks?;
    let mut report = masks.report();
    if let Some(latency) = &opts.latency {
        report.edge = Some(edge_report(&model, latency)?);
    }
    let per_image = match &opts.save_logits {
        Some(_) => Some(per_image(&model, &set, &masks, cfg.data.batch_size)?),
        None => None,
    };
    outcome(report, &run_order, per_image, part)
}

/// What `--save-logits` keeps of each image: the natural logits [N, 10], the
/// labels [N], and per evaluation `correct.NAME` [N] (u8, 1: the model is
/// right on that evaluation's input).
fn per_image(
    model: &Model,
    set: &EvalSet,
    masks: &EvalMasks,
    batch_size: usize,
) -> Result<Vec<(String, Tensor)>> {
    let mut tensors = vec![
        ("logits".to_string(), logits(model, set, batch_size)?),
        ("labels".to_string(), set.labels.shallow_clone()),
    ];
    for (name, correct) in masks.names.iter().zip(&masks.correct) {
        tensors.push((format!("correct.{name}"), correct.to_kind(tch::Kind::Uint8)));
    }
    Ok(tensors)
}

/// The JSON file of an unsplit evaluation of `run` (in that order) giving
/// `report`: the report with what a reader needs to trust it (threat model,
/// weights and their sha256, each evaluation's parameters, seed).
fn eval_file(
    cfg: &Config,
    opts: &EvalOptions,
    arch: Arch,
    run: &[EvalAttack],
    report: EvalReport,
) -> Result<EvalFile> {
    let eps = cfg.attack.eps.get();
    let sha = (opts.weights.as_deref())
        .map(crate::data::checksum::sha256)
        .transpose()?;
    Ok(EvalFile {
        report,
        interval_kind: interval::INTERVAL_KIND.into(),
        norm: "Linf".into(),
        eps,
        eps_text: eps_text(eps),
        arch: arch.to_string(),
        weights: opts.weights.as_ref().map(|p| p.display().to_string()),
        weights_sha256: sha,
        attacks: run
            .iter()
            .map(|e| AttackRecord::of(e, &cfg.attack))
            .collect(),
        seed: cfg.run.seed,
        batch_size: cfg.data.batch_size,
        version: env!("CARGO_PKG_VERSION").into(),
        shard: None,
    })
}

/// What the part of `eval --shard I/COUNT` with these flags must say, I from
/// 0, besides its accuracies (its report is left empty): the provenance
/// ([`super::shards::check_part`] compares it) and the images it covers. The
/// checks of [`run`] come first (flags, `opts.json`: the joined result), and
/// every shard must get at least one whole batch; the test images are counted
/// from the data files.
pub fn expected_parts(mut cfg: Config, opts: &EvalOptions, count: u32) -> Result<Vec<EvalFile>> {
    apply_flags(&mut cfg, opts)?;
    check_before(&cfg, opts)?;
    if opts.weights.is_none() {
        return Err(Error::Usage(format!(
            "eval --shards {count}: needs --weights (the checkpoint to evaluate)"
        )));
    }
    crate::data::ensure_cifar10(&cfg.data)?;
    let test = crate::data::load_split(
        &cfg.data.root,
        crate::data::SplitKind::Test,
        cfg.data.checksums,
    )?;
    let limit = opts
        .test_limit
        .or(cfg.eval.test_limit)
        .or(cfg.data.test_limit);
    let total = limit.map_or(test.len(), |n| n.min(test.len()));
    let batch_size = cfg.data.batch_size;
    let batches = total.div_ceil(batch_size);
    if count as usize > batches {
        return Err(Error::Usage(format!(
            "eval --shards {count}: {} make {} of {batch_size}; give at most {batches} shards (each gets whole batches)",
            crate::report::plural::count(total as u64, "test image"),
            crate::report::plural::count(batches as u64, "batch"),
        )));
    }
    let arch = opts.arch.unwrap_or(cfg.student.arch);
    let whole = eval_file(&cfg, opts, arch, &opts.evals, EvalReport::default())?;
    Ok((0..count)
        .map(|index| {
            let r = shard_range(Shard { index, count }, total, batch_size);
            let part = ShardPart {
                index,
                count,
                start: r.start,
                end: r.end,
                total,
            };
            EvalFile {
                shard: Some(part),
                ..whole.clone()
            }
        })
        .collect())
}

/// Without weights: the latency of a randomly initialised `arch` (`--latency`).
fn latency_only(
    cfg: &Config,
    opts: &EvalOptions,
    arch: Arch,
    device: Device,
) -> Result<EvalReport> {
    let Some(latency) = &opts.latency else {
        return Err(Error::Usage(
            "eval: --weights is needed to measure accuracy (only --latency works without weights)"
                .into(),
        ));
    };
    tch::manual_seed(cfg.run.seed as i64);
    let mut model = Model::new(arch, device);
    cfg.perf.build(device)?.prepare_for_evaluation(&mut model);
    Ok(EvalReport {
        edge: Some(edge_report(&model, latency)?),
        ..EvalReport::default()
    })
}

/// The teacher, when an evaluation needs it (`train_attack` with kl_pgd).
fn load_teacher(cfg: &Config, opts: &EvalOptions, device: Device) -> Result<Option<Model>> {
    if !opts.evals.iter().any(|e| e.needs_teacher(&cfg.attack)) {
        return Ok(None);
    }
    let path = cfg.teacher.weights.as_ref().ok_or_else(|| {
        Error::Setting(
            "eval: train_attack is kl_pgd, which needs the teacher: set teacher.weights".into(),
        )
    })?;
    Ok(Some(Model::load(cfg.teacher.arch, device, path)?))
}

/// `shard`'s part of `set` (whole batches of `batch_size`), and which part it is.
fn shard_of(set: EvalSet, shard: Shard, batch_size: usize) -> Result<(EvalSet, Option<ShardPart>)> {
    let total = set.labels.size()[0] as usize;
    let r = shard_range(shard, total, batch_size);
    let part = ShardPart {
        index: shard.index,
        count: shard.count,
        start: r.start,
        end: r.end,
        total,
    };
    Ok((set.slice(r)?, Some(part)))
}

/// `ard-pipeline eval merge PARTS --json OUT`: reads the partial results,
/// joins them ([`super::shards::merge`]) and returns the outcome to print,
/// then write to `json` (checked first: its folder, and that it is no part).
pub fn merge(parts: &[PathBuf], json: &Path) -> Result<EvalOutcome> {
    let began = Instant::now();
    let inputs: Vec<(&str, &Path)> = parts.iter().map(|p| ("a part", p.as_path())).collect();
    check_outputs(
        &[Output {
            flag: "--json",
            path: json,
        }],
        &inputs,
    )?;
    let mut files = Vec::with_capacity(parts.len());
    for p in parts {
        let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
        let file: EvalFile = serde_json::from_str(&text).map_err(|e| {
            Error::Usage(format!(
                "eval merge: {} is not an eval JSON file: {e}",
                p.display()
            ))
        })?;
        files.push(file);
    }
    let names: Vec<String> = parts.iter().map(|p| p.display().to_string()).collect();
    let whole = super::shards::merge(files, &names)?;
    Ok(EvalOutcome::merged(
        whole,
        json.to_path_buf(),
        began.elapsed().as_secs_f64(),
    ))
}

/// The evaluations in the order they run: as given, or for a cascade natural
/// first ([`Evaluation::cascade`]).
pub fn run_order(evals: &[EvalAttack], cascade: bool) -> Vec<EvalAttack> {
    if !cascade {
        return evals.to_vec();
    }
    let rest = evals.iter().filter(|e| **e != EvalAttack::Natural);
    std::iter::once(EvalAttack::Natural)
        .chain(rest.copied())
        .collect()
}

fn names(evals: &[EvalAttack]) -> Vec<String> {
    evals.iter().map(EvalAttack::name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eps_is_shown_in_255ths() {
        assert_eq!(eps_text(8.0 / 255.0), "8/255");
        assert_eq!(eps_text(0.03), "0.03");
    }
}
