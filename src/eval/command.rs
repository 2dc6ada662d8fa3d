//! `ard-pipeline eval`: evaluates a checkpoint on the CIFAR-10 test set under
//! the listed evaluations, prints a table, and writes JSON
//! (`{"images", "accuracy": {name: percent}, "worst_case", "seconds", "edge"}`).
//! With `--latency` it adds the edge numbers (parameters, MACs per image,
//! latency at batch 1 and 128); without weights only those are reported.
//!
//! The config file gives eps (`attack.eps`), the training attack that
//! `train_attack` replays, the seed of the random starts, the data folder and
//! the batch size; the flags only change how the evaluation runs.

use super::edge::{edge_report, LatencyOptions};
use super::{EvalAttack, EvalReport, EvalSet, Evaluation};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::models::{Arch, Model};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Tensor};

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
    /// Save the natural logits ([N, 10]) and labels as safetensors here.
    pub save_logits: Option<PathBuf>,
    pub data_root: Option<PathBuf>,
    pub device: Option<String>,
    pub batch_size: Option<usize>,
    /// Measure latency (and report the edge numbers).
    pub latency: Option<LatencyOptions>,
    /// AutoAttack's cascade ([`Evaluation::cascade`]): each evaluation only on
    /// the images still right under the earlier ones.
    pub cascade: bool,
}

/// What an evaluation produced.
#[derive(Debug, Clone)]
pub struct EvalOutcome {
    pub arch: Arch,
    pub weights: Option<PathBuf>,
    pub eps: f64,
    /// Evaluation names in the order asked for.
    pub order: Vec<String>,
    pub report: EvalReport,
    pub wall_s: f64,
}

/// `eps` as `8/255` when it is a whole number of 255ths.
fn eps_text(eps: f64) -> String {
    let k = eps * 255.0;
    if (k - k.round()).abs() < 1e-6 {
        format!("{}/255", k.round())
    } else {
        format!("{eps}")
    }
}

impl EvalOutcome {
    /// The table `ard-pipeline eval` prints.
    pub fn table(&self) -> String {
        let weights = self
            .weights
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "random init".into());
        let mut s = String::new();
        if self.weights.is_some() {
            s += &format!(
                "{} on {} test images, eps {} ({weights}, {:.1} s)\n",
                self.arch,
                self.report.images,
                eps_text(self.eps),
                self.wall_s
            );
            if self.report.cascade {
                s += "  cascade: each evaluation ran on the images right under every earlier one;\n  its accuracy counts the images right under it and every earlier one\n";
            }
            s += &format!(
                "  {:<16} {:>9} {:>10}\n",
                "evaluation", "accuracy", "seconds"
            );
            for name in &self.order {
                let acc = self.report.accuracy.get(name).copied().unwrap_or(f64::NAN);
                let sec = self.report.seconds.get(name).copied().unwrap_or(0.0);
                s += &format!("  {name:<16} {acc:>8.2}% {sec:>10.1}\n");
                for part in self.report.parts.get(name).into_iter().flatten() {
                    let label = match part.name.as_str() {
                        super::autoattack::CLEAN => part.name.clone(),
                        other => format!("after {other}"),
                    };
                    s += &format!(
                        "    {label:<14} {:>8.2}% {:>10.1}\n",
                        part.accuracy, part.seconds
                    );
                }
            }
            s += &format!("  {:<16} {:>8.2}%\n", "worst_case", self.report.worst_case);
            for flag in &self.report.flags {
                s += &format!("  warning: {}\n", flag.message);
            }
        }
        if let Some(edge) = &self.report.edge {
            s += &edge.lines();
        }
        s
    }
}

/// Logs progress about every 10% of the images, with throughput and ETA; a
/// count that goes back (the next evaluation of a cascade) starts over.
fn progress_logger(mut began: Instant) -> impl FnMut(usize, usize) {
    let mut next_decile = 1;
    let (mut last, mut last_at) = (0, began);
    move |done, n| {
        if done < last {
            // The next evaluation began when the previous one last reported.
            next_decile = 1;
            began = last_at;
        }
        last = done;
        last_at = Instant::now();
        let n = n.max(1);
        if done * 10 >= next_decile * n || done == n {
            next_decile = done * 10 / n + 1;
            let secs = began.elapsed().as_secs_f64();
            let rate = done as f64 / secs.max(1e-9);
            let eta = (n - done.min(n)) as f64 / rate.max(1e-9);
            log::info!(
                "eval: {done}/{n} images ({}%), {secs:.0} s, {rate:.1} images/s, about {eta:.0} s left",
                done * 100 / n
            );
        }
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

/// Runs `ard-pipeline eval`: applies the flags to `cfg`, evaluates, writes the
/// JSON and logits files asked for, and returns the outcome to print.
pub fn run(mut cfg: Config, opts: &EvalOptions) -> Result<EvalOutcome> {
    let began = Instant::now();
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
    let arch = opts.arch.unwrap_or(cfg.student.arch);
    let device = crate::device::resolve_device(&cfg.run.device)?;
    // Malloc reuse too: without it APGD-T spent a third of its time
    // page-faulting fresh buffers in (1.8 billion minor faults in 2 hours).
    crate::perf::configure_process(&cfg);
    let eps = cfg.attack.eps.get();
    let outcome = |weights, order, report| EvalOutcome {
        arch,
        weights,
        eps,
        order,
        report,
        wall_s: began.elapsed().as_secs_f64(),
    };

    let Some(weights) = &opts.weights else {
        let Some(latency) = &opts.latency else {
            return Err(Error::Usage(
                "eval: --weights is needed to measure accuracy (only --latency works without weights)"
                    .into(),
            ));
        };
        tch::manual_seed(cfg.run.seed as i64);
        let model = Model::new(arch, device);
        let report = EvalReport {
            edge: Some(edge_report(&model, latency)?),
            ..EvalReport::default()
        };
        write_json(opts, &report)?;
        return Ok(outcome(None, Vec::new(), report));
    };

    let model = Model::load(arch, device, weights)?;
    let teacher = if opts.evals.iter().any(|e| e.needs_teacher(&cfg.attack)) {
        let path = cfg.teacher.weights.as_ref().ok_or_else(|| {
            Error::Setting(
                "eval: train_attack is kl_pgd, which needs the teacher: set teacher.weights".into(),
            )
        })?;
        Some(Model::load(cfg.teacher.arch, device, path)?)
    } else {
        None
    };
    let limit = opts.test_limit.or(cfg.eval.test_limit);
    let set = EvalSet::test(&cfg.data, limit.or(cfg.data.test_limit))?;
    let order: Vec<String> = opts.evals.iter().map(|e| e.name()).collect();
    log::info!(
        "eval: {arch} on {} test images, {} ({} per batch, {device:?})",
        set.labels.size()[0],
        order.join(", "),
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
    let progress = progress_logger(Instant::now());
    let mut report = if opts.cascade {
        job.cascade(progress)?
    } else {
        job.masks(progress)?
    }
    .report();
    if let Some(latency) = &opts.latency {
        report.edge = Some(edge_report(&model, latency)?);
    }
    write_json(opts, &report)?;
    if let Some(path) = &opts.save_logits {
        let logits = logits(&model, &set, cfg.data.batch_size)?;
        crate::checkpoint::write_atomic(
            path,
            &[
                ("logits".to_string(), logits),
                ("labels".to_string(), set.labels.shallow_clone()),
            ],
        )?;
    }
    Ok(outcome(Some(weights.clone()), order, report))
}

fn write_json(opts: &EvalOptions, report: &EvalReport) -> Result<()> {
    if let Some(path) = &opts.json {
        let text = serde_json::to_string_pretty(report).map_err(Error::json("the eval report"))?;
        std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))?;
    }
    Ok(())
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
