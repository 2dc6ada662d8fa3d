//! An evaluation split by images: `eval --shard I/N` evaluates shard I of N
//! (contiguous whole batches, so every image sees the batch and random start
//! it sees in an unsplit run) and writes a partial result naming its image
//! range; [`merge`] joins the parts into the result the unsplit evaluation
//! gives, refusing parts of another checkpoint, architecture, attack set, eps,
//! seed, batch size or image count, and gaps or overlaps.

use super::record::EvalFile;
use super::{interval, EvalReport};
use crate::error::{Error, Result};
use crate::soft_labels::Shard;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// The images a partial result covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPart {
    pub index: u32,
    pub count: u32,
    /// Test images `start..end` of the `total` the whole evaluation covers.
    pub start: usize,
    pub end: usize,
    pub total: usize,
}

/// Shard `shard`'s images of `total` in batches of `batch_size`: whole
/// batches, split as evenly as [`Shard::range`] splits them.
pub fn shard_range(shard: Shard, total: usize, batch_size: usize) -> Range<usize> {
    let batch_size = batch_size.max(1);
    let (b0, b1) = shard.range(total.div_ceil(batch_size) as u64);
    let at = |b: u64| (b as usize * batch_size).min(total);
    at(b0)..at(b1)
}

/// What parts must share to be joined, as text for a message.
fn identity(f: &EvalFile) -> [(&'static str, String); 8] {
    let attacks = serde_json::to_string(&f.attacks).unwrap_or_default();
    [
        ("weights sha256", format!("{:?}", f.weights_sha256)),
        ("arch", f.arch.clone()),
        ("attacks", attacks),
        ("eps", f.eps.to_string()),
        ("seed", f.seed.to_string()),
        ("batch size", f.batch_size.to_string()),
        ("cascade", f.report.cascade.to_string()),
        (
            "test images",
            f.shard.map_or("unsplit".into(), |s| s.total.to_string()),
        ),
    ]
}

/// Whether the part `name` is the one `expected` describes
/// ([`super::command::expected_parts`]): the same provenance and images. The
/// error names the part and the first thing that differs (with both values
/// when they are short).
pub fn check_part(expected: &EvalFile, part: &EvalFile, name: &str) -> Result<()> {
    let mut differs = identity(expected)
        .into_iter()
        .zip(identity(part))
        .find(|((_, a), (_, b))| a != b)
        .map(|((what, a), (_, b))| (what, a, b));
    if differs.is_none() && expected.shard != part.shard {
        let text = |s: Option<ShardPart>| {
            s.map_or("none".into(), |p| {
                format!("{}/{} images {}..{}", p.index, p.count, p.start, p.end)
            })
        };
        differs = Some(("shard", text(expected.shard), text(part.shard)));
    }
    let Some((what, want, got)) = differs else {
        return Ok(());
    };
    let values = if want.len() + got.len() <= 80 {
        format!(": {got} there, {want} here")
    } else {
        String::new()
    };
    Err(Error::Usage(format!(
        "{name} is a part of another evaluation (different {what}{values})"
    )))
}

/// Joins partial results (any order) into the whole evaluation's result.
/// `names` label the parts in messages (their file names).
pub fn merge(parts: Vec<EvalFile>, names: &[String]) -> Result<EvalFile> {
    let bad = |m: String| Err(Error::Usage(format!("eval merge: {m}")));
    if parts.is_empty() {
        return bad("no partial results given".into());
    }
    let mut order: Vec<usize> = (0..parts.len()).collect();
    for (i, p) in parts.iter().enumerate() {
        if p.shard.is_none() {
            return bad(format!("{} is not a partial result (no shard)", names[i]));
        }
    }
    order.sort_by_key(|&i| parts[i].shard.map(|s| s.start));
    let first = &parts[order[0]];
    let want = identity(first);
    for &i in &order[1..] {
        for ((what, a), (_, b)) in want.iter().zip(identity(&parts[i])) {
            if *a != b {
                return bad(format!(
                    "{} and {} differ in {what} ({a} vs {b})",
                    names[order[0]], names[i]
                ));
            }
        }
    }
    let total = first.shard.map_or(0, |s| s.total);
    let mut at = 0;
    for &i in &order {
        let s = parts[i].shard.expect("checked above");
        if s.start != at {
            let what = if s.start > at { "a gap" } else { "an overlap" };
            return bad(format!(
                "{what} at image {at}: {} covers {}..{}",
                names[i], s.start, s.end
            ));
        }
        at = s.end;
    }
    if at != total {
        return bad(format!("images {at}..{total} are missing"));
    }
    let mut whole = first.clone();
    whole.report = joined(order.iter().map(|&i| &parts[i].report), total);
    whole.shard = None;
    Ok(whole)
}

/// The report of all images from the parts' counts (accuracies as the
/// unsplit evaluation computes them: right images over all images).
fn joined<'a>(parts: impl Iterator<Item = &'a EvalReport> + Clone, total: usize) -> EvalReport {
    let first = parts.clone().next().cloned().unwrap_or_default();
    let count = |get: &dyn Fn(&EvalReport) -> f64| -> f64 {
        let k: u64 = parts
            .clone()
            .map(|r| interval::correct_of(get(r), r.images))
            .sum();
        100.0 * k as f64 / total.max(1) as f64
    };
    let sum = |name: &str| -> f64 { parts.clone().filter_map(|r| r.seconds.get(name)).sum() };
    EvalReport {
        images: total,
        accuracy: first
            .accuracy
            .keys()
            .map(|name| {
                let acc = |r: &EvalReport| r.accuracy.get(name).copied().unwrap_or(0.0);
                (name.clone(), count(&acc))
            })
            .collect(),
        worst_case: count(&|r: &EvalReport| r.worst_case),
        seconds: first.seconds.keys().map(|n| (n.clone(), sum(n))).collect(),
        edge: None,
        cascade: first.cascade,
        ..EvalReport::default()
    }
    .with_intervals()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_whole_batches_covering_every_image_once() {
        let shard = |index, count| Shard { index, count };
        assert_eq!(shard_range(shard(0, 2), 1000, 128), 0..512);
        assert_eq!(shard_range(shard(1, 2), 1000, 128), 512..1000);
        for n in [1, 7, 100, 1000] {
            let mut at = 0;
            for i in 0..3 {
                let r = shard_range(shard(i, 3), n, 32);
                assert_eq!(r.start, at);
                assert!(r.start.is_multiple_of(32));
                at = r.end;
            }
            assert_eq!(at, n);
        }
    }
}
