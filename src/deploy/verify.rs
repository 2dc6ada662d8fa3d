//! Checks of exported files against the tch model they came from, and their
//! robustness as deployed: natural accuracy, PGD-20 and APGD-CE examples made
//! on the tch model (transfer), and Square run on each file itself through
//! its runtime (score-based: it needs only the file's outputs).

use super::card::{Int8Check, Parity, RobustRow, Robustness, Verification};
use super::interrupt::Interrupt;
use super::runtime::OnnxModel;
use crate::attacks::square::SquareOutcome;
use crate::attacks::{square_linf, AttackInput, NoiseKey};
use crate::config::Config;
use crate::error::Result;
use crate::eval::{EvalAttack, EvalSet};
use crate::models::Model;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// fp32 parity target: max |logit difference| relative to the logit scale.
pub const PARITY_RELATIVE: f64 = 1e-4;
/// Images [`degenerate`] looks at.
const DEGENERATE_PROBE: usize = 256;
/// int8 target: natural accuracy within this many points of fp32.
pub const INT8_MAX_DROP: f64 = 1.5;

fn tch_logits(model: &Model, x: &Tensor) -> Tensor {
    tch::no_grad(|| model.forward_t(x, false))
}

/// How many entries of the bool `mask` hold.
fn count(mask: &Tensor) -> i64 {
    mask.sum(Kind::Int64).int64_value(&[])
}

fn percent(mask: &Tensor) -> f64 {
    100.0 * count(mask) as f64 / mask.size()[0].max(1) as f64
}

/// Why `model` is no classifier, if it is not: its logits on the first test
/// images of `set` are NaN or infinite, or the same for every image (all-zero
/// or constant weights: every parity check would pass at logit scale 0).
pub fn degenerate(model: &Model, set: &EvalSet) -> Result<Option<String>> {
    let n = (set.images.size()[0] as usize).min(DEGENERATE_PROBE);
    let Some((_, idx)) = set.batches(n.max(1)).next() else {
        return Ok(None);
    };
    let (x, _) = set.rows(&idx, Device::Cpu)?;
    let logits = tch_logits(model, &x).to_kind(Kind::Double);
    if logits.isfinite().all().int64_value(&[]) == 0 {
        return Ok(Some(format!(
            "gives NaN or infinite logits on the first {n} test images"
        )));
    }
    let scale = logits.abs().max().double_value(&[]);
    let spread = (&logits - logits.get(0)).abs().max().double_value(&[]);
    if n > 1 && spread <= 1e-6 * scale.max(1e-6) {
        return Ok(Some(format!(
            "gives the same logits for each of the first {n} test images (logit scale {scale:.2e})"
        )));
    }
    Ok(None)
}

/// The fp32 file against the tch model, and the int8 file against the fp32 file.
pub fn verify(
    model: &Model,
    fp32: &mut OnnxModel,
    mut int8: Option<&mut OnnxModel>,
    set: &EvalSet,
    batch_size: usize,
) -> Result<Verification> {
    let n = set.images.size()[0];
    let (mut max_diff, mut scale) = (0f64, 0f64);
    let (mut agree, mut int8_agree, mut right_fp32, mut right_int8) = (0i64, 0i64, 0i64, 0i64);
    for (_, idx) in set.batches(batch_size) {
        let (x, y) = set.rows(&idx, Device::Cpu)?;
        let reference = tch_logits(model, &x);
        let exported = fp32.logits(&x)?;
        max_diff = max_diff.max((&reference - &exported).abs().max().double_value(&[]));
        scale = scale.max(reference.abs().max().double_value(&[]));
        let class = exported.argmax(1, false);
        agree += count(&reference.argmax(1, false).eq_tensor(&class));
        right_fp32 += count(&class.eq_tensor(&y));
        if let Some(q) = int8.as_deref_mut() {
            let class8 = q.logits(&x)?.argmax(1, false);
            int8_agree += count(&class8.eq_tensor(&class));
            right_int8 += count(&class8.eq_tensor(&y));
        }
    }
    let pct = |k: i64| 100.0 * k as f64 / n.max(1) as f64;
    let relative = max_diff / scale.max(1.0);
    let fp32_check = Parity {
        max_abs_diff: max_diff,
        logit_scale: scale,
        relative,
        top1_agreement: pct(agree),
        pass: relative <= PARITY_RELATIVE && agree == n && scale > 0.0,
    };
    let int8_check = int8.map(|_| {
        let drop = pct(right_fp32) - pct(right_int8);
        Int8Check {
            top1_agreement: pct(int8_agree),
            natural_fp32: pct(right_fp32),
            natural_int8: pct(right_int8),
            drop,
            pass: drop <= INT8_MAX_DROP,
        }
    });
    Ok(Verification {
        test_images: n as usize,
        fp32: fp32_check,
        int8: int8_check,
    })
}

/// A model that answers a batch of images with logits.
type Scorer<'a> = &'a mut dyn FnMut(&Tensor) -> Result<Tensor>;

/// [N] bool per input of `xs`: `logits` puts the label first.
fn right_on<'t>(
    logits: Scorer,
    xs: impl IntoIterator<Item = &'t Tensor>,
    y: &Tensor,
) -> Result<Vec<Tensor>> {
    xs.into_iter()
        .map(|x| Ok(logits(x)?.argmax(1, false).eq_tensor(y)))
        .collect()
}

/// Per-image outcomes of one model: natural, transfer PGD-20, transfer APGD-CE, Square.
#[derive(Default)]
struct Outcomes {
    columns: [Vec<Tensor>; 4],
    queries: Vec<Tensor>,
}

impl Outcomes {
    fn push(&mut self, correct: Vec<Tensor>, queries: Tensor) -> Result<()> {
        if correct.len() != self.columns.len() {
            return Err(crate::Error::invalid(
                "robustness",
                format!(
                    "{} outcomes for {} columns",
                    correct.len(),
                    self.columns.len()
                ),
            ));
        }
        for (column, c) in self.columns.iter_mut().zip(correct) {
            column.push(c);
        }
        self.queries.push(queries);
        Ok(())
    }

    fn row(&self, model: &str) -> RobustRow {
        let cat = |parts: &[Tensor]| Tensor::cat(parts, 0);
        let [natural, pgd, apgd, square] = self.columns.each_ref().map(|c| cat(c));
        let worst = natural
            .logical_and(&pgd)
            .logical_and(&apgd)
            .logical_and(&square);
        RobustRow {
            model: model.into(),
            natural: percent(&natural),
            transfer_pgd20: percent(&pgd),
            transfer_apgd_ce: percent(&apgd),
            square: percent(&square),
            worst_case: percent(&worst),
            square_mean_queries: cat(&self.queries)
                .to_kind(Kind::Double)
                .mean(Kind::Double)
                .double_value(&[]),
        }
    }
}

/// How [`robustness`] runs: eps, seed and batch size from `cfg`, Square's
/// budget, and the export's interrupt (checked after each batch).
pub struct RobustnessSpec<'a> {
    pub cfg: &'a Config,
    pub square_queries: usize,
    pub interrupt: &'a Interrupt,
}

/// Robustness of the tch model, the fp32 file and the int8 file on `set`.
/// The PGD-20 and APGD-CE examples use the same random starts as
/// `ard-pipeline eval` at the same batch size.
pub fn robustness(
    model: &Model,
    fp32: &mut OnnxModel,
    mut int8: Option<&mut OnnxModel>,
    set: &EvalSet,
    spec: &RobustnessSpec,
) -> Result<Robustness> {
    let (cfg, square_queries) = (spec.cfg, spec.square_queries);
    let began = Instant::now();
    let eps = cfg.attack.eps.get();
    let pgd = EvalAttack::Pgd {
        steps: 20,
        restarts: 1,
    };
    let apgd = EvalAttack::ApgdCe {
        iterations: crate::eval::APGD_ITERATIONS,
        restarts: 1,
    };
    let square = EvalAttack::Square {
        queries: square_queries,
    };
    let transfer: Vec<(EvalAttack, Box<dyn crate::attacks::Attack>)> = [pgd, apgd]
        .into_iter()
        .filter_map(|e| e.build(&cfg.attack).map(|a| (e, a)))
        .collect();
    let n = set.images.size()[0];
    let mut outcomes: Vec<Outcomes> = (0..3).map(|_| Outcomes::default()).collect();
    for (rows, idx) in set.batches(cfg.data.batch_size) {
        let (x, y) = set.rows(&idx, Device::Cpu)?;
        let key = |e: &EvalAttack| NoiseKey {
            seed: cfg.run.seed,
            counter: rows.start as u64,
            stream: e.stream(),
        };
        let input = AttackInput {
            x: &x,
            y: &y,
            teacher_logits: None,
        };
        let mut examples = vec![x.shallow_clone()];
        for (e, attack) in &transfer {
            examples.push(attack.perturb(model, &input, key(e))?);
        }
        let square_key = key(&square);
        // A file's outcomes on the examples, then Square run on the file itself.
        let on_file = |logits: Scorer| -> Result<(Vec<Tensor>, SquareOutcome)> {
            let mut right = right_on(logits, &examples, &y)?;
            let found = square_linf(&mut *logits, &x, &y, eps, square_queries, square_key)?;
            right.extend(right_on(logits, [&found.x_adv], &y)?);
            Ok((right, found))
        };
        let (fp32_right, found) = on_file(&mut |x| fp32.logits(x))?;
        // The tch model, which computes what the fp32 file computes (verified),
        // is scored on the fp32 file's Square examples instead of a second
        // search through libtorch's much slower forward.
        let mut tch_model = |x: &Tensor| Ok(tch_logits(model, x));
        let tch_right = right_on(&mut tch_model, examples.iter().chain([&found.x_adv]), &y)?;
        outcomes[0].push(tch_right, found.queries.shallow_clone())?;
        outcomes[1].push(fp32_right, found.queries)?;
        if let Some(q) = int8.as_deref_mut() {
            let (int8_right, found) = on_file(&mut |x| q.logits(x))?;
            outcomes[2].push(int8_right, found.queries)?;
        }
        spec.interrupt.check()?;
        log::info!(
            "export: robustness {}/{n} images, {:.0} s",
            rows.end,
            began.elapsed().as_secs_f64()
        );
    }
    let names = ["tch fp32", "onnx fp32", "onnx int8"];
    let rows = outcomes
        .iter()
        .zip(names)
        .filter(|(o, _)| !o.queries.is_empty())
        .map(|(o, name)| o.row(name))
        .collect();
    Ok(Robustness {
        test_images: n as usize,
        eps,
        square_queries,
        rows,
        seconds: began.elapsed().as_secs_f64(),
    })
}
