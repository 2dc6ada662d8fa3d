//! The card written beside an exported model (`card.json`, `card.md`): what
//! was exported from which checkpoint, how, the checks that the files compute
//! what the trained model computes, their robustness as deployed, and their
//! edge figures on the machine that exported them.

use crate::eval::edge::Latency;
use crate::eval::interval::thousands;
use serde::{Deserialize, Serialize};

/// The checkpoint a model was exported from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Source {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// What `scripts/export_onnx.py` reports of the export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportFacts {
    pub opset: i64,
    /// BatchNorm layers in the model, and how many were folded into convolutions.
    pub batchnorms: u64,
    pub batchnorms_folded: u64,
    /// Largest logit change the folding made on random inputs (PyTorch, fp32).
    pub fold_max_abs_diff: f64,
    pub torch: String,
    pub onnx: String,
    pub onnxruntime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8: Option<Quantization>,
}

/// How the int8 model was quantized.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Quantization {
    pub format: String,
    pub weights: String,
    pub activations: String,
    pub calibration: String,
    pub calibration_images: u64,
    pub quantizer: String,
}

/// One file written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileFacts {
    pub name: String,
    /// `fp32` or `int8`.
    pub precision: String,
    pub bytes: u64,
    pub sha256: String,
}

/// fp32 file vs the tch model on the same test images.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parity {
    pub max_abs_diff: f64,
    /// Largest |logit| of the tch model on those images.
    pub logit_scale: f64,
    /// `max_abs_diff / max(logit_scale, 1)`; the target is <= 1e-4.
    pub relative: f64,
    /// Percent of images with the same top-1 class; the target is 100.
    pub top1_agreement: f64,
    pub pass: bool,
}

/// int8 file vs the fp32 file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Int8Check {
    /// Percent of images where the int8 and fp32 files give the same class.
    pub top1_agreement: f64,
    pub natural_fp32: f64,
    pub natural_int8: f64,
    /// `natural_fp32 - natural_int8`; the target is <= 1.5 points.
    pub drop: f64,
    pub pass: bool,
}

/// The checks, on the first `test_images` test images.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    pub test_images: usize,
    pub fp32: Parity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8: Option<Int8Check>,
}

/// Accuracy (percent) of one model under the deployment attacks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RobustRow {
    /// `tch fp32`, `onnx fp32` or `onnx int8`.
    pub model: String,
    pub natural: f64,
    /// PGD-20 examples made on the tch model (white-box for the tch row).
    pub transfer_pgd20: f64,
    /// APGD-CE examples made on the tch model (white-box for the tch row).
    pub transfer_apgd_ce: f64,
    /// Square run on this file itself (logits only); for the tch model, the
    /// fp32 file's Square examples (the two compute the same function).
    pub square: f64,
    /// Right clean and under all three.
    pub worst_case: f64,
    /// Mean Square queries per image.
    pub square_mean_queries: f64,
}

/// Robustness of what ships.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Robustness {
    pub test_images: usize,
    pub eps: f64,
    pub square_queries: usize,
    pub rows: Vec<RobustRow>,
    pub seconds: f64,
}

/// Edge figures of one model in its runtime.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeRow {
    pub model: String,
    /// `libtorch` or `onnxruntime`.
    pub runtime: String,
    pub file_bytes: u64,
    pub latency: Vec<Latency>,
    /// Resident memory of the process running only this model: before the
    /// runtime and model were loaded, and its peak (VmHWM) after the timings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_rss_mb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_mb: Option<f64>,
}

/// Edge figures on the exporting machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Edge {
    pub cpu: String,
    pub threads: usize,
    pub rows: Vec<EdgeRow>,
}

/// The whole card.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Card {
    pub arch: String,
    pub parameters: u64,
    pub macs_per_image: u64,
    pub source: Source,
    pub input: String,
    pub output: String,
    pub export: ExportFacts,
    pub files: Vec<FileFacts>,
    pub verification: Verification,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robustness: Option<Robustness>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<Edge>,
    /// Which robustness number to trust, and why.
    pub trust: String,
}

/// What the card says about which number to trust.
pub const TRUST: &str = "Trust the worst case. For the fp32 file, the PGD-20 and APGD-CE \
examples are made on the tch model, which the file matches to float rounding (see the \
verification), so they are white-box attacks on the file as well; Square, which needs only \
the file's outputs, checks that this robustness is not an artefact of gradients. For the int8 \
file no attack sees its true gradients (quantization makes them zero almost everywhere), and \
quantized networks are known to mask gradients, so a gradient attack on the int8 graph would \
overstate its robustness: its numbers are transfer attacks from the fp32 model plus Square on \
the int8 file itself, and their worst case is an upper bound on its robustness, usually close \
when the int8 file agrees with fp32 on almost every image.";

fn pct(v: f64) -> String {
    format!("{v:.1}%")
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

impl Card {
    /// The card as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = self.summary_markdown();
        s += &verification_markdown(&self.verification);
        if let Some(r) = &self.robustness {
            s += &robustness_markdown(r);
        }
        if let Some(e) = &self.edge {
            s += &edge_markdown(e);
        }
        s += &format!("\n## Which number to trust\n\n{}\n", self.trust);
        s
    }

    /// Source, export and file table.
    fn summary_markdown(&self) -> String {
        let mut s = format!("# {} exported for deployment\n\n", self.arch);
        s += &format!(
            "- Source: `{}` ({}, sha256 `{}`)\n- {} parameters, {} MACs per 32x32 image\n\
             - Input `{}`; output `{}`\n- Exported with torch {}, onnx {}, opset {}; BatchNorm: \
             {} of {} folded into the preceding convolution (largest logit change {:.1e})\n",
            self.source.path,
            mb(self.source.bytes),
            self.source.sha256,
            thousands(self.parameters),
            thousands(self.macs_per_image),
            self.input,
            self.output,
            self.export.torch,
            self.export.onnx,
            self.export.opset,
            self.export.batchnorms_folded,
            self.export.batchnorms,
            self.export.fold_max_abs_diff,
        );
        if let Some(q) = &self.export.int8 {
            s += &format!(
                "- int8: {} format by `{}` (onnxruntime {}): weights {}; activations {}, \
                 ranges calibrated ({}) on the first {} training images\n",
                q.format,
                q.quantizer,
                self.export.onnxruntime,
                q.weights,
                q.activations,
                q.calibration,
                q.calibration_images
            );
        }
        s += "\n| file | precision | size | sha256 |\n|---|---|---|---|\n";
        for f in &self.files {
            s += &format!(
                "| `{}` | {} | {} | `{}` |\n",
                f.name,
                f.precision,
                mb(f.bytes),
                &f.sha256[..16.min(f.sha256.len())]
            );
        }
        s
    }
}

fn verification_markdown(v: &Verification) -> String {
    let mut s = format!(
        "\n## Verification ({} test images)\n\n- fp32 file vs tch model: max |logit \
         difference| {:.2e} at logit scale {:.2} (relative {:.1e}, target <= 1e-4); top-1 \
         agreement {} (target 100%): **{}**\n",
        v.test_images,
        v.fp32.max_abs_diff,
        v.fp32.logit_scale,
        v.fp32.relative,
        pct(v.fp32.top1_agreement),
        if v.fp32.pass { "pass" } else { "FAIL" }
    );
    if let Some(q) = &v.int8 {
        s += &format!(
            "- int8 file vs fp32 file: top-1 agreement {}; natural accuracy {} vs {} \
             (drop {:.2} points, target <= 1.5): **{}**\n",
            pct(q.top1_agreement),
            crate::eval::interval::accuracy_text(q.natural_int8, v.test_images, 1),
            crate::eval::interval::accuracy_text(q.natural_fp32, v.test_images, 1),
            q.drop,
            if q.pass { "pass" } else { "FAIL" }
        );
    }
    s
}

fn robustness_markdown(r: &Robustness) -> String {
    let mut s = format!(
        "\n## Robustness as deployed ({} test images, L-inf eps {:.4} = {}/255)\n\n\
         Transfer: examples made on the tch model, run through each file. Square: {} \
         queries per image on each file itself through ONNX Runtime; the tch row is scored \
         on the fp32 file's Square examples (the two compute the same function, verified \
         above).\n\n\
         | model | natural | transfer PGD-20 | transfer APGD-CE | Square | worst case |\n\
         |---|---|---|---|---|---|\n",
        r.test_images,
        r.eps,
        (r.eps * 255.0).round(),
        r.square_queries
    );
    let acc = |v: f64| crate::eval::interval::accuracy_text(v, r.test_images, 1);
    for row in &r.rows {
        s += &format!(
            "| {} | {} | {} | {} | {} | **{}** |\n",
            row.model,
            acc(row.natural),
            acc(row.transfer_pgd20),
            acc(row.transfer_apgd_ce),
            acc(row.square),
            acc(row.worst_case)
        );
    }
    s += "\n(For the tch row the PGD-20 and APGD-CE columns are white-box. In brackets: the \
          95% Wilson interval and the number of test images.)\n";
    s
}

fn edge_markdown(e: &Edge) -> String {
    let mut s = format!(
        "\n## Edge figures ({}, {} thread{})\n\n\
         | model | runtime | file | batch 1 (ms) | batch 128 (ms) | images/s at 128 | peak RSS |\n\
         |---|---|---|---|---|---|---|\n",
        e.cpu,
        e.threads,
        if e.threads == 1 { "" } else { "s" }
    );
    for row in &e.rows {
        let at = |b: usize| row.latency.iter().find(|l| l.batch == b);
        let ms = |b: usize| at(b).map_or("-".into(), |l| format!("{:.2}", l.median_ms));
        let rss = match (row.peak_rss_mb, row.baseline_rss_mb) {
            (Some(p), Some(b)) => format!("{p:.0} MB ({:.0} MB above start)", p - b),
            _ => "-".into(),
        };
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            row.model,
            row.runtime,
            mb(row.file_bytes),
            ms(1),
            ms(128),
            at(128).map_or("-".into(), |l| format!("{:.0}", l.images_per_s)),
            rss
        );
    }
    s += "\nLatency: median of timed runs after warm-up. Peak RSS: VmHWM of a process \
          that loads only that model (the ard-pipeline binary, libtorch mapped); \
          `above start` is what loading and running the model added.\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_gives_each_accuracy_its_interval_and_count() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/weights/quickstart-mobilenet_v2_x0.5.deploy.json"
        );
        let card: Card = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let md = card.markdown();
        assert!(
            md.contains("| tch fp32 | 45.3% (42.2-48.4, n=1,000) |"),
            "{md}"
        );
        assert!(md.contains("**21.8% (19.4-24.5, n=1,000)**"), "{md}");
    }
}
