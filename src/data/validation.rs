//! The validation split: the last `data.validation_images` of the 50,000
//! CIFAR-10 training images, held out for model selection (`best.safetensors`)
//! and the catastrophic-overfitting guard, so that neither looks at the test
//! set. Training never sees them: it uses a prefix of the images before them
//! (`data.train_limit` of them when set), so training image i is dataset
//! image i whatever the split, and every shuffle, view and soft-label cache
//! entry keyed by that index does not depend on it.
//!
//! ```text
//! dataset index  0 ............ train_end ...... total - v ........ total
//!                [ training prefix )  (unused)   [ validation split )
//! ```

use super::cifar::{load_split, Split, SplitKind};
use super::download::ensure_cifar10;
use crate::config::DataConfig;
use crate::error::Result;
use std::ops::Range;

/// Dataset indices of the training images and of the validation images, out
/// of `total` training-split images: the validation split is the last
/// `validation_images` (all of them when there are fewer), training the first
/// `train_limit` of the rest (all the rest without a limit). Disjoint by
/// construction; training always starts at 0.
pub fn split_ranges(
    total: usize,
    validation_images: usize,
    train_limit: Option<usize>,
) -> (Range<usize>, Range<usize>) {
    let validation_start = total - validation_images.min(total);
    let train_end = train_limit.map_or(validation_start, |n| n.min(validation_start));
    (0..train_end, validation_start..total)
}

/// Number of images a run of `cfg` trains on (CIFAR-10: 50,000 less the
/// validation split, capped by `train_limit`).
pub fn train_images(cfg: &DataConfig) -> usize {
    split_ranges(
        SplitKind::Train.num_images(),
        cfg.validation_images,
        cfg.train_limit,
    )
    .0
    .len()
}

/// Cuts a whole training split into (training prefix, validation split) as
/// [`split_ranges`] says.
pub fn split_train(
    mut all: Split,
    validation_images: usize,
    train_limit: Option<usize>,
) -> (Split, Split) {
    let (train, _) = split_ranges(all.len(), validation_images, train_limit);
    let validation = all.split_off_last(validation_images);
    (all.prefix(train.len()), validation)
}

/// Reads the training split as `[data]` says ([`ensure_cifar10`], checksums)
/// and returns (training images, validation images).
pub fn load_train_and_validation(cfg: &DataConfig) -> Result<(Split, Split)> {
    ensure_cifar10(cfg)?;
    let all = load_split(&cfg.root, SplitKind::Train, cfg.checksums)?;
    Ok(split_train(all, cfg.validation_images, cfg.train_limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cifar::{IMAGE_BYTES, NUM_CLASSES};

    fn synthetic(n: usize) -> Split {
        let labels = (0..n).map(|i| (i % NUM_CLASSES) as u8).collect();
        // Image i is filled with byte i, so images can be told apart.
        let images = (0..n)
            .flat_map(|i| std::iter::repeat_n(i as u8, IMAGE_BYTES))
            .collect();
        Split::new(images, labels).unwrap()
    }

    #[test]
    fn ranges_are_disjoint_and_training_is_a_prefix() {
        for total in [0, 1, 10, 100, 50_000] {
            for v in [0, 1, 7, 100, 1000, 60_000] {
                for limit in [None, Some(1), Some(5), Some(99), Some(49_000), Some(70_000)] {
                    let (t, val) = split_ranges(total, v, limit);
                    assert_eq!(t.start, 0, "training is a prefix");
                    assert!(t.end <= val.start, "{t:?} overlaps {val:?}");
                    assert_eq!(val.end, total);
                    assert_eq!(val.len(), v.min(total));
                    let rest = total - val.len();
                    assert_eq!(t.len(), limit.map_or(rest, |n| n.min(rest)));
                }
            }
        }
        // The training indices do not depend on the split when there is room:
        // the same prefix as before validation existed.
        assert_eq!(split_ranges(50_000, 1000, Some(256)).0, 0..256);
        assert_eq!(split_ranges(50_000, 0, Some(256)).0, 0..256);
        assert_eq!(
            split_ranges(50_000, 1000, None),
            (0..49_000, 49_000..50_000)
        );
        assert_eq!(split_ranges(50_000, 0, None), (0..50_000, 50_000..50_000));
    }

    #[test]
    fn split_train_holds_out_the_last_images() {
        let all = synthetic(20);
        let (train, val) = split_train(all.clone(), 5, Some(8));
        assert_eq!((train.len(), val.len()), (8, 5));
        assert_eq!(train, all.clone().prefix(8));
        for i in 0..5 {
            assert_eq!(val.image(i), all.image(15 + i));
            assert_eq!(val.label(i), all.label(15 + i));
        }
        // No image is in both.
        for i in 0..train.len() {
            for j in 0..val.len() {
                assert_ne!(train.image(i), val.image(j));
            }
        }
        let (train, val) = split_train(all.clone(), 5, None);
        assert_eq!((train.len(), val.len()), (15, 5));
        let (train, val) = split_train(all.clone(), 5, Some(100));
        assert_eq!((train.len(), val.len()), (15, 5));
        let (train, val) = split_train(all.clone(), 0, None);
        assert_eq!((train, val.len()), (all, 0));
    }
}
