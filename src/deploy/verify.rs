//! Checks of exported files against the tch model they came from, and their
//! robustness as deployed: natural accuracy, PGD-20 and APGD-CE examples made
//! on the tch model (transfer), and Square run on each file itself through
//! its runtime (score-based: it needs only the file's outputs).

use super::card::{Int8Check, Parity, RobustRow, Robustness, Verification};
use super::runtime::OnnxModel;
use crate::attacks::square::SQUARE_P_INIT;
use crate::attacks::{square_linf, AttackInput, NoiseKey};
use crate::config::Config;
use crate::error::Result;
use crate::eval::{EvalAttack, EvalSet};
use crate::models::Model;
use std::time::Instant;
use tch::{Kind, Tensor};

/// fp32 parity target: max |logit difference| relative to the logit scale.
pub const PARITY_RELATIVE: f64 = 1e-4;
/// int8 target: natural accuracy within this many points of fp32.
pub const INT8_MAX_DROP: f64 = 1.5;

fn tch_logits(model: &Model, x: &Tensor) -> Tensor {
    tch::no_grad(|| model.forward_t(x, false))
}

fn percent(mask: &Tensor) -> f64 {
    let n = mask.size()[0].max(1) as f64;
    100.0 * mask.sum(Kind::Int64).int64_value(&[]) as f64 / n
}

/// The rows `[start, start + len)` of the set.
fn batch(set: &EvalSet, start: i64, len: i64) -> Result<(Tensor, Tensor)> {
    Ok((
        set.images.f_narrow(0, start, len)?.f_to_kind(Kind::Float)?,
        set.labels.f_narrow(0, start, len)?,
    ))
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
    let mut start = 0;
    while start < n {
        let len = (batch_size as i64).min(n - start);
        let (x, y) = batch(set, start, len)?;
        let reference = tch_logits(model, &x);
        let exported = fp32.logits(&x)?;
        max_diff = max_diff.max((&reference - &exported).abs().max().double_value(&[]));
        scale = scale.max(reference.abs().max().double_value(&[]));
        let class = exported.argmax(1, false);
        agree += reference
            .argmax(1, false)
            .eq_tensor(&class)
            .sum(Kind::Int64)
            .int64_value(&[]);
        right_fp32 += class.eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
        if let Some(q) = int8.as_deref_mut() {
            let class8 = q.logits(&x)?.argmax(1, false);
            int8_agree += class8.eq_tensor(&class).sum(Kind::Int64).int64_value(&[]);
            right_int8 += class8.eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
        }
        start += len;
    }
    let pct = |k: i64| 100.0 * k as f64 / n.max(1) as f64;
    let relative = max_diff / scale.max(1.0);
    let fp32_check = Parity {
        max_abs_diff: max_diff,
        logit_scale: scale,
        relative,
        top1_agreement: pct(agree),
        pass: relative <= PARITY_RELATIVE && agree == n,
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
fn right_on(logits: Scorer, xs: &[Tensor], y: &Tensor) -> Result<Vec<Tensor>> {
    xs.iter()
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

/// Robustness of the tch model, the fp32 file and the int8 file on `set`
/// (eps, seed and batch size from `cfg`). The PGD-20 and APGD-CE examples use
/// the same random starts as `ard-pipeline eval` at the same batch size.
pub fn robustness(
    model: &Model,
    fp32: &mut OnnxModel,
    mut int8: Option<&mut OnnxModel>,
    set: &EvalSet,
    cfg: &Config,
    square_queries: usize,
) -> Result<Robustness> {
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
    let batch_size = cfg.data.batch_size.max(1) as i64;
    let mut outcomes: Vec<Outcomes> = (0..3).map(|_| Outcomes::default()).collect();
    let mut start = 0;
    while start < n {
        let len = batch_size.min(n - start);
        let (x, y) = batch(set, start, len)?;
        let key = |e: &EvalAttack| NoiseKey {
            seed: cfg.run.seed,
            counter: start as u64,
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
        let run_square = |logits: Scorer| {
            square_linf(
                logits,
                &x,
                &y,
                eps,
                square_queries,
                SQUARE_P_INIT,
                square_key,
            )
        };
        let mut tch_model = |x: &Tensor| Ok(tch_logits(model, x));
        let mut fp32_model = |x: &Tensor| fp32.logits(x);
        let mut tch_right = right_on(&mut tch_model, &examples, &y)?;
        let mut fp32_right = right_on(&mut fp32_model, &examples, &y)?;
        // Square runs on the files; the tch model, which computes what the fp32
        // file computes (verified), is scored on the fp32 file's Square examples
        // instead of a second search through libtorch's much slower forward.
        let found = run_square(&mut fp32_model)?;
        fp32_right.extend(right_on(
            &mut fp32_model,
            &[found.x_adv.shallow_clone()],
            &y,
        )?);
        tch_right.extend(right_on(&mut tch_model, &[found.x_adv], &y)?);
        outcomes[0].push(tch_right, found.queries.shallow_clone())?;
        outcomes[1].push(fp32_right, found.queries)?;
        if let Some(q) = int8.as_deref_mut() {
            let mut int8_model = |x: &Tensor| q.logits(x);
            let mut int8_right = right_on(&mut int8_model, &examples, &y)?;
            let found = run_square(&mut int8_model)?;
            int8_right.extend(right_on(&mut int8_model, &[found.x_adv], &y)?);
            outcomes[2].push(int8_right, found.queries)?;
        }
        start += len;
        log::info!(
            "export: robustness {}/{n} images, {:.0} s",
            start,
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
