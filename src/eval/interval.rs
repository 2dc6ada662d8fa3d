//! Error bars of an accuracy: the 95% Wilson score interval of a proportion
//! (Wilson 1927; Newcombe 1998's method 3), and the one way every table of the
//! project writes an accuracy with it: `30.45% (28.5-32.5, n=2,000)`.
//!
//! Wilson rather than the normal approximation because it stays inside
//! [0, 100] and keeps its coverage near 0% and 100% (an undefended model
//! under attack, a teacher's clean accuracy on a few images).

use serde::{Deserialize, Serialize};

/// The standard normal quantile of 97.5%: a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// What the intervals are, for JSON readers.
pub const INTERVAL_KIND: &str = "95% Wilson score interval";

/// A confidence interval of an accuracy, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

/// The 95% Wilson score interval, in percent, of `correct` successes out of
/// `n` (0..=100 for `n = 0`: nothing was measured).
pub fn wilson(correct: u64, n: u64) -> Interval {
    if n == 0 {
        return Interval { lo: 0.0, hi: 100.0 };
    }
    let (k, n) = (correct.min(n) as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Interval {
        lo: 100.0 * (center - half).max(0.0),
        hi: 100.0 * (center + half).min(1.0),
    }
}

/// The images right out of `n` behind an accuracy of `percent` (every
/// accuracy here is a whole number of images over `n`).
pub fn correct_of(percent: f64, n: usize) -> u64 {
    (percent / 100.0 * n as f64).round().clamp(0.0, n as f64) as u64
}

/// The interval of an accuracy of `percent` measured on `n` images.
pub fn of_percent(percent: f64, n: usize) -> Interval {
    wilson(correct_of(percent, n), n as u64)
}

/// `12345678` → `12,345,678`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An accuracy with its interval: `30.45% (28.5-32.5, n=2,000)`; with
/// `decimals` digits for the accuracy, one for the bounds. NaN (not
/// measured) is `-`.
pub fn accuracy_text(percent: f64, n: usize, decimals: usize) -> String {
    if percent.is_nan() {
        return "-".into();
    }
    let i = of_percent(percent, n);
    format!(
        "{percent:.decimals$}% ({:.1}-{:.1}, n={})",
        i.lo,
        i.hi,
        thousands(n as u64)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(i: Interval, lo: f64, hi: f64) {
        assert!(
            (i.lo - lo).abs() < 0.005 && (i.hi - hi).abs() < 0.005,
            "{i:?} against {lo}-{hi}"
        );
    }

    #[test]
    fn wilson_matches_newcombes_published_table() {
        // Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3
        // (score interval without continuity correction), in percent.
        close(wilson(81, 263), 25.53, 36.62);
        close(wilson(15, 148), 6.24, 16.05);
        close(wilson(0, 20), 0.0, 16.11);
        close(wilson(1, 29), 0.61, 17.18);
        // The bounds stay inside [0, 100], and nothing measured says nothing.
        close(wilson(20, 20), 83.89, 100.0);
        close(wilson(0, 0), 0.0, 100.0);
    }

    #[test]
    fn accuracies_print_with_their_interval_and_count() {
        assert_eq!(accuracy_text(30.45, 2000, 2), "30.45% (28.5-32.5, n=2,000)");
        assert_eq!(
            accuracy_text(30.45, 10_000, 2),
            "30.45% (29.6-31.4, n=10,000)"
        );
        assert_eq!(accuracy_text(f64::NAN, 10, 2), "-");
        assert_eq!(correct_of(30.45, 2000), 609);
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
