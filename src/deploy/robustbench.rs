//! `ard-pipeline export --format robustbench`: what a RobustBench submission
//! needs for a student. `scripts/export_robustbench.py` loads the checkpoint
//! into RobustBench's own model class (the `robustbench` package's ResNet-18
//! or TRADES WideResNet; for MobileNetV2, which RobustBench does not ship, the
//! project's PyTorch definition, written beside it), saves its state_dict as
//! `model.pt`, loads that file back strictly into a fresh instance and
//! returns its logits on test images, which must equal the project's.
//! `model_info.json` follows RobustBench's model_info files (architecture,
//! eps, clean and AutoAttack accuracy from an `eval --json` file, threat
//! model, extra data, forward passes) and adds the checkpoint's sha256.

use super::export::{load_checked, run_python, sha256, Script, Staging};
use super::interrupt::Interrupt;
use super::verify::PARITY_RELATIVE;
use crate::config::Config;
use crate::data::SplitKind;
use crate::error::{Error, Result};
use crate::eval::command::eps_text;
use crate::eval::EvalSet;
use crate::models::{Arch, Model};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The files this format writes into `--out`.
pub const INFO_FILE: &str = "model_info.json";
pub const STATE_DICT_FILE: &str = "model.pt";
/// MobileNetV2's definition (RobustBench has none).
pub const DEFINITION_FILE: &str = "mobilenet_v2.py";

/// What `export --format robustbench` was asked to do.
#[derive(Debug, Clone)]
pub struct RobustBenchOptions {
    pub arch: Arch,
    pub weights: PathBuf,
    pub out: PathBuf,
    /// An `ard-pipeline eval --json` file of this checkpoint: clean and
    /// AutoAttack accuracy (None: both null, and the notes say so).
    pub eval_json: Option<PathBuf>,
    /// Test images the `.pt` is checked on (the first N).
    pub test_images: usize,
    pub python: PathBuf,
    pub script: PathBuf,
}

/// `model_info.json`: RobustBench's fields, then what backs them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    /// For the submitter to fill in.
    pub link: String,
    pub authors: String,
    pub venue: String,
    pub dataset: String,
    pub threat_model: String,
    pub eps: String,
    pub architecture: String,
    pub additional_data: bool,
    pub number_forward_passes: u32,
    /// Percent with two decimals, as RobustBench writes them; null when unknown.
    pub clean_acc: Option<String>,
    pub autoattack_acc: Option<String>,
    /// Test images each accuracy was measured on.
    pub clean_n: Option<usize>,
    pub autoattack_n: Option<usize>,
    pub unreliable: bool,
    pub footnote: String,
    pub checkpoint: Checkpoint,
    pub state_dict: StateDict,
    pub evaluation: Option<Evaluation>,
    /// What a reader must know (missing accuracies, fewer than 10,000 images).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub path: String,
    pub sha256: String,
    pub arch: String,
}

/// The `.pt` file and the class it loads into.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateDict {
    pub file: String,
    pub sha256: String,
    /// Where the class is (`robustbench.model_zoo.architectures.resnet`, or
    /// the definition file written beside the `.pt`).
    pub module: String,
    pub constructor: String,
    /// Max |logit difference| against the project's model, and its scale.
    pub max_abs_diff: f64,
    pub logit_scale: f64,
    pub checked_images: usize,
    pub robustbench_version: Option<String>,
    pub torch_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    pub path: String,
    pub sha256: String,
}

/// What the Python step prints.
#[derive(Debug, Deserialize)]
struct ScriptReport {
    module: String,
    constructor: String,
    robustbench: Option<String>,
    torch: String,
}

/// RobustBench's name for `arch`.
fn architecture(arch: Arch) -> String {
    match arch {
        Arch::ResNet18 => "ResNet-18".into(),
        Arch::Wrn { depth, widen } => format!("WideResNet-{depth}-{widen}"),
        Arch::MobileNetV2 { width: 1.0 } => "MobileNetV2".into(),
        Arch::MobileNetV2 { width } => format!("MobileNetV2 (width {width})"),
    }
}

/// An accuracy of an eval JSON: a number, or an object with `accuracy`
/// (and `n`); with the image count.
fn accuracy_of(value: &Value, images: Option<usize>) -> Option<(f64, Option<usize>)> {
    let n_of = |v: &Value| v.get("n").and_then(Value::as_u64).map(|n| n as usize);
    match value {
        Value::Number(x) => Some((x.as_f64()?, images)),
        Value::Object(_) => {
            let acc = value.get("accuracy").and_then(Value::as_f64)?;
            Some((acc, n_of(value).or(images)))
        }
        _ => None,
    }
}

/// The clean and AutoAttack accuracies of an `eval --json` file, refused
/// when the file records another checkpoint, eps or architecture.
struct EvalFacts {
    clean: Option<(f64, Option<usize>)>,
    autoattack: Option<(f64, Option<usize>)>,
    source: Evaluation,
}

fn read_eval(path: &Path, weights_sha: &str, eps: f64, arch: Arch) -> Result<EvalFacts> {
    let refuse =
        |why: String| Error::Usage(format!("export --eval-json {}: {why}", path.display()));
    let text =
        std::fs::read_to_string(path).map_err(|e| refuse(format!("cannot be read ({e})")))?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| refuse(format!("not JSON ({e}); give the file of `eval --json`")))?;
    let accuracy = json
        .get("accuracy")
        .filter(|a| a.is_object())
        .ok_or_else(|| refuse("has no `accuracy` table: not an `eval --json` file".into()))?;
    // Any sha256 the file records (top level or one level down) must be ours.
    let hashes: Vec<&str> = json
        .as_object()
        .into_iter()
        .flat_map(|o| o.iter())
        .flat_map(|(k, v)| {
            let nested = v.as_object().into_iter().flat_map(|o| o.iter());
            std::iter::once((k, v)).chain(nested)
        })
        .filter(|(k, _)| k.contains("sha256"))
        .filter_map(|(_, v)| v.as_str())
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    if !hashes.is_empty() && !hashes.contains(&weights_sha) {
        return Err(refuse(format!(
            "evaluates another checkpoint (sha256 {}..., the weights are {}...)",
            &hashes[0][..12],
            &weights_sha[..12]
        )));
    }
    if let Some(theirs) = json.get("eps").and_then(Value::as_f64) {
        if (theirs - eps).abs() > 1e-9 {
            return Err(refuse(format!(
                "was measured at eps {} but attack.eps is {}",
                eps_text(theirs),
                eps_text(eps)
            )));
        }
    }
    let named = ["arch", "architecture"]
        .iter()
        .find_map(|k| json.get(*k).and_then(Value::as_str));
    if let Some(theirs) = named {
        if theirs.parse::<Arch>().is_ok_and(|a| a != arch) {
            return Err(refuse(format!("evaluates {theirs}, not {arch}")));
        }
    }
    let images = json
        .get("images")
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    let get = |name: &str| accuracy.get(name).and_then(|v| accuracy_of(v, images));
    Ok(EvalFacts {
        clean: get("natural"),
        autoattack: get("autoattack"),
        source: Evaluation {
            path: path.display().to_string(),
            sha256: sha256(path)?,
        },
    })
}

/// The notes a reader needs about the accuracies.
fn notes(facts: Option<&EvalFacts>) -> Vec<String> {
    let Some(facts) = facts else {
        return vec![
            "clean_acc and autoattack_acc are null: no --eval-json was given (run \
             `ard-pipeline eval --attacks natural,autoattack --json F` and pass --eval-json F)"
                .into(),
        ];
    };
    let mut notes = Vec::new();
    let full = SplitKind::Test.num_images();
    for (name, acc, what) in [
        ("clean_acc", &facts.clean, "natural"),
        ("autoattack_acc", &facts.autoattack, "autoattack"),
    ] {
        match acc {
            None => notes.push(format!(
                "{name} is null: {} has no `{what}` accuracy",
                facts.source.path
            )),
            Some((_, Some(n))) if *n < full => notes.push(format!(
                "{name} was measured on the first {n} test images; RobustBench's table uses all {full}"
            )),
            Some(_) => {}
        }
    }
    notes
}

/// The first `n` test images as safetensors `images` at `path`.
fn write_probe(set: &EvalSet, path: &Path) -> Result<()> {
    let images = set.images.to_kind(Kind::Float);
    crate::checkpoint::write_atomic(path, &[("images".to_string(), images)])
}

/// Runs `ard-pipeline export --format robustbench`.
pub fn run(cfg: &Config, opts: &RobustBenchOptions, interrupt: &Interrupt) -> Result<ModelInfo> {
    let test_max = SplitKind::Test.num_images();
    if opts.test_images == 0 || opts.test_images > test_max {
        return Err(Error::Usage(format!(
            "export --test-images {}: must be between 1 and {test_max}",
            opts.test_images
        )));
    }
    let eps = cfg.attack.eps.get();
    let set = EvalSet::test(&cfg.data, Some(opts.test_images))?;
    let (model, weights_sha) = load_checked(opts.arch, &opts.weights, &set, &opts.out)?;
    let facts = opts
        .eval_json
        .as_deref()
        .map(|p| read_eval(p, &weights_sha, eps, opts.arch))
        .transpose()?;
    let staging = Staging::create(&opts.out, &opts.weights, &weights_sha)?;

    let probe = staging.path("probe.safetensors");
    let logits_path = staging.path("logits.safetensors");
    write_probe(&set, &probe)?;
    let definition = matches!(opts.arch, Arch::MobileNetV2 { .. });
    let args = script_args(opts, &staging, probe, &logits_path, definition);
    log::info!(
        "export: RobustBench entry for {} from {}",
        opts.arch,
        opts.weights.display()
    );
    let script = Script {
        python: &opts.python,
        script: &opts.script,
        args: &args,
    };
    let report: ScriptReport = run_python(&script, interrupt)?;
    let (max_abs_diff, logit_scale) =
        check_parity(&model, &set, &logits_path, &report.constructor, opts)?;
    interrupt.check()?;
    let info = ModelInfo {
        name: opts
            .weights
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        link: String::new(),
        authors: String::new(),
        venue: String::new(),
        dataset: "cifar10".into(),
        threat_model: "Linf".into(),
        eps: eps_text(eps),
        architecture: architecture(opts.arch),
        additional_data: false,
        number_forward_passes: 1,
        clean_acc: facts
            .as_ref()
            .and_then(|f| f.clean)
            .map(|(a, _)| format!("{a:.2}")),
        autoattack_acc: facts
            .as_ref()
            .and_then(|f| f.autoattack)
            .map(|(a, _)| format!("{a:.2}")),
        clean_n: facts.as_ref().and_then(|f| f.clean).and_then(|(_, n)| n),
        autoattack_n: facts
            .as_ref()
            .and_then(|f| f.autoattack)
            .and_then(|(_, n)| n),
        unreliable: false,
        footnote: String::new(),
        checkpoint: Checkpoint {
            path: opts.weights.display().to_string(),
            sha256: weights_sha,
            arch: opts.arch.to_string(),
        },
        state_dict: StateDict {
            file: STATE_DICT_FILE.into(),
            sha256: sha256(&staging.path(STATE_DICT_FILE))?,
            module: report.module,
            constructor: report.constructor,
            max_abs_diff,
            logit_scale,
            checked_images: set.images.size()[0] as usize,
            robustbench_version: report.robustbench,
            torch_version: report.torch,
        },
        notes: notes(facts.as_ref()),
        evaluation: facts.map(|f| f.source),
    };
    let json = serde_json::to_string_pretty(&info).map_err(Error::json("model_info"))?;
    let info_path = staging.path(INFO_FILE);
    std::fs::write(&info_path, json + "\n").map_err(|e| Error::io(&info_path, e))?;
    let mut names = vec![STATE_DICT_FILE, INFO_FILE];
    let mut stale = Vec::new();
    if definition {
        names.push(DEFINITION_FILE);
    } else {
        stale.push(DEFINITION_FILE);
    }
    staging.install(&names, &stale)?;
    Ok(info)
}

/// The Python step's arguments; `definition`: it writes the architecture's
/// class definition too.
fn script_args(
    opts: &RobustBenchOptions,
    staging: &Staging,
    probe: PathBuf,
    logits_path: &Path,
    definition: bool,
) -> Vec<String> {
    let path_arg = |p: PathBuf| p.display().to_string();
    let mut args = vec![
        "--arch".to_string(),
        opts.arch.to_string(),
        "--weights".into(),
        path_arg(opts.weights.clone()),
        "--pt".into(),
        path_arg(staging.path(STATE_DICT_FILE)),
        "--probe".into(),
        path_arg(probe),
        "--logits".into(),
        path_arg(logits_path.to_path_buf()),
    ];
    if definition {
        args.extend([
            "--definition".into(),
            path_arg(staging.path(DEFINITION_FILE)),
        ]);
    }
    args
}

/// The .pt, loaded back into the class (`constructor`), computes what our
/// model computes on the probe images: (max |logit difference|, logit scale).
fn check_parity(
    model: &Model,
    set: &EvalSet,
    logits_path: &Path,
    constructor: &str,
    opts: &RobustBenchOptions,
) -> Result<(f64, f64)> {
    let theirs = crate::checkpoint::read(logits_path)?
        .remove("logits")
        .ok_or_else(|| Error::Process("export: the Python step wrote no logits".into()))?;
    let ours = tch::no_grad(|| -> Result<Tensor> {
        let parts: Vec<Tensor> = set
            .images
            .split(256, 0)
            .iter()
            .map(|x| model.forward_t(&x.to_kind(Kind::Float), false))
            .collect();
        Ok(Tensor::f_cat(&parts, 0)?)
    })?;
    let theirs = theirs.to_kind(Kind::Double).to_device(Device::Cpu);
    let ours = ours.to_kind(Kind::Double);
    if theirs.size() != ours.size() {
        return Err(Error::Process(format!(
            "export: the Python step's logits are {:?}, expected {:?}",
            theirs.size(),
            ours.size()
        )));
    }
    let max_abs_diff = (&ours - &theirs).abs().max().double_value(&[]);
    let logit_scale = ours.abs().max().double_value(&[]);
    if max_abs_diff.is_nan() || max_abs_diff > PARITY_RELATIVE * logit_scale.max(1.0) {
        return Err(Error::Process(format!(
            "export: {} loaded into {} gives other logits than {} (max |difference| {max_abs_diff:.3e} \
             at scale {logit_scale:.2}); nothing was written to {}",
            STATE_DICT_FILE,
            constructor,
            opts.weights.display(),
            opts.out.display()
        )));
    }
    Ok((max_abs_diff, logit_scale))
}

impl ModelInfo {
    /// What `export --format robustbench` prints.
    pub fn summary(&self, out: &Path) -> String {
        let acc = |a: &Option<String>, n: Option<usize>| match (a, n) {
            (Some(a), Some(n)) => format!("{a}% (n={n})"),
            (Some(a), None) => format!("{a}%"),
            _ => "null".into(),
        };
        let mut s = format!(
            "RobustBench entry: {} ({}), Linf eps {}, clean {}, AutoAttack {}\n\
             state_dict {} loads strictly into {} ({}): max |logit difference| {:.2e} on {} test images\n",
            self.architecture,
            self.checkpoint.arch,
            self.eps,
            acc(&self.clean_acc, self.clean_n),
            acc(&self.autoattack_acc, self.autoattack_n),
            self.state_dict.file,
            self.state_dict.constructor,
            self.state_dict.module,
            self.state_dict.max_abs_diff,
            self.state_dict.checked_images
        );
        for note in &self.notes {
            s += &format!("note: {note}\n");
        }
        s += &format!("written to {}\n", out.display());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_file(dir: &Path, json: &str) -> PathBuf {
        let p = dir.join("eval.json");
        std::fs::write(&p, json).unwrap();
        p
    }

    #[test]
    fn eval_json_gives_the_accuracies_or_is_refused_by_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        let sha = "a".repeat(64);
        let eps = 8.0 / 255.0;
        let arch = Arch::ResNet18;
        let p = eval_file(
            dir.path(),
            r#"{"images": 1000, "accuracy": {"natural": 81.5, "autoattack": {"accuracy": 40.25, "n": 1000}}}"#,
        );
        let f = read_eval(&p, &sha, eps, arch).unwrap();
        assert_eq!(f.clean, Some((81.5, Some(1000))));
        assert_eq!(f.autoattack, Some((40.25, Some(1000))));
        let n = notes(Some(&f));
        assert!(
            n.iter().all(|n| n.contains("first 1000 test images")),
            "{n:?}"
        );
        // Without AutoAttack: null, and said.
        let p = eval_file(
            dir.path(),
            r#"{"images": 10000, "accuracy": {"natural": 80}}"#,
        );
        let f = read_eval(&p, &sha, eps, arch).unwrap();
        assert!(f.autoattack.is_none());
        assert!(notes(Some(&f))[0].contains("no `autoattack` accuracy"));
        assert!(notes(None)[0].contains("no --eval-json"));
        // Another checkpoint, eps or architecture, or not an eval file.
        let other = format!(
            r#"{{"weights_sha256": "{}", "accuracy": {{}}}}"#,
            "b".repeat(64)
        );
        let err = |json: &str| {
            let p = eval_file(dir.path(), json);
            read_eval(&p, &sha, eps, arch).err().unwrap().to_string()
        };
        assert!(err(&other).contains("another checkpoint"));
        assert!(err(r#"{"eps": 0.01, "accuracy": {}}"#).contains("attack.eps is 8/255"));
        assert!(err(r#"{"arch": "wrn34_10", "accuracy": {}}"#).contains("not resnet18"));
        assert!(err(r#"{"rows": []}"#).contains("not an `eval --json` file"));
        assert!(err("not json").contains("not JSON"));
        let same = format!(r#"{{"weights": {{"sha256": "{sha}"}}, "accuracy": {{}}}}"#);
        let p = eval_file(dir.path(), &same);
        read_eval(&p, &sha, eps, arch).unwrap();
    }

    #[test]
    fn names_as_robustbench_spells_them() {
        assert_eq!(architecture(Arch::ResNet18), "ResNet-18");
        assert_eq!(
            architecture("wrn34_10".parse().unwrap()),
            "WideResNet-34-10"
        );
    }
}
