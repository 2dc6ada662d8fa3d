//! Counted nouns for messages a person reads: "1 epoch", "2 epochs",
//! "1 batch", "3 batches", "1 entry", "0 entries".

/// `n` and `noun`, the noun in the plural unless `n` is 1.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {}", plural(noun))
    }
}

/// Nouns whose "ch" sounds as k: a plain +s.
const HARD_CH: [&str; 2] = ["epoch", "stomach"];

/// The regular English plural of `noun`: +es after s, x, z, ch, sh (not a
/// hard ch, as in epoch); y after a consonant becomes ies; else +s.
pub fn plural(noun: &str) -> String {
    let sibilant = ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|e| noun.ends_with(e))
        && !HARD_CH.iter().any(|h| noun.ends_with(h));
    if sibilant {
        return format!("{noun}es");
    }
    if let Some(stem) = noun.strip_suffix('y') {
        if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) && !stem.is_empty() {
            return format!("{stem}ies");
        }
    }
    format!("{noun}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(count(1, "epoch"), "1 epoch");
        assert_eq!(count(0, "epoch"), "0 epochs");
        assert_eq!(count(2, "run"), "2 runs");
        assert_eq!(count(1, "batch"), "1 batch");
        assert_eq!(count(3, "batch"), "3 batches");
        assert_eq!(count(2, "entry"), "2 entries");
        assert_eq!(count(1, "entry"), "1 entry");
        assert_eq!(count(2, "day"), "2 days");
        assert_eq!(count(5, "image"), "5 images");
    }
}
