//! Epoch plans and batches: which images, in which order, under which views,
//! and the tensors built from them.
//!
//! An epoch's order is a seeded permutation of `0..n` ([`epoch_order`], ChaCha
//! seeded from (seed, epoch)); each image's view comes from
//! [`view_for`]\(seed, epoch, dataset index). Both are pure
//! functions of the seed, so batch `b` of epoch `e` can be rebuilt on its own.

use super::augment::{apply_view, view_for, View};
use super::cifar::{Split, IMAGE_BYTES, IMAGE_SIZE};
use crate::config::DataConfig;
use crate::device::upload;
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

/// A batch ready for a model.
#[derive(Debug)]
pub struct Batch {
    /// Dataset index of each image.
    pub indices: Vec<u64>,
    /// The augmentation view applied to each image.
    pub views: Vec<View>,
    /// `[B, 3, 32, 32]` f32 in `[0, 1]`.
    pub images: Tensor,
    /// `[B]` i64 class labels.
    pub labels: Tensor,
}

/// Builds the batch of images `indices` of `split` under `views` (one per index)
/// on the host, then copies it to `device` in one transfer.
///
/// Errors when the lengths differ, an index is out of range, or the copy fails.
pub fn make_batch(
    split: &Split,
    indices: &[usize],
    views: &[View],
    device: Device,
) -> Result<Batch> {
    if indices.len() != views.len() {
        return Err(Error::invalid(
            "make_batch",
            format!("{} indices but {} views", indices.len(), views.len()),
        ));
    }
    if let Some(&i) = indices.iter().find(|&&i| i >= split.len()) {
        return Err(Error::invalid(
            "make_batch",
            format!("index {i} is out of range for a split of {}", split.len()),
        ));
    }
    let b = indices.len();
    let mut pixels = vec![0f32; b * IMAGE_BYTES];
    for ((&i, &view), out) in indices
        .iter()
        .zip(views)
        .zip(pixels.chunks_exact_mut(IMAGE_BYTES))
    {
        apply_view(split.image(i), view, out);
    }
    let labels: Vec<i64> = indices.iter().map(|&i| i64::from(split.label(i))).collect();
    let s = IMAGE_SIZE as i64;
    let images = upload(
        Tensor::f_from_slice(&pixels)?.f_view([b as i64, 3, s, s])?,
        device,
    )?;
    let labels = upload(Tensor::f_from_slice(&labels)?, device)?;
    Ok(Batch {
        indices: indices.iter().map(|&i| i as u64).collect(),
        views: views.to_vec(),
        images,
        labels,
    })
}

/// The order of `0..n` in `epoch`: a permutation seeded by (seed, epoch) when
/// `shuffle`, else `0..n` in order.
pub fn epoch_order(seed: u64, epoch: u64, n: usize, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&epoch.to_le_bytes());
        key[16..24].copy_from_slice(b"shuffle\0");
        order.shuffle(&mut ChaCha8Rng::from_seed(key));
    }
    order
}

/// How one epoch is cut into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochPlan {
    /// Images per batch (the last batch may be smaller unless `drop_last`).
    pub batch_size: usize,
    /// Seed of the shuffle and of the views.
    pub seed: u64,
    /// Epoch number, mixed into the shuffle and the views.
    pub epoch: u64,
    /// Permute the images ([`epoch_order`]); otherwise dataset order.
    pub shuffle: bool,
    /// Per-image views from [`view_for`]; otherwise [`View::IDENTITY`].
    pub augment: bool,
    /// Leave out a last batch smaller than `batch_size`.
    pub drop_last: bool,
}

impl EpochPlan {
    /// The training plan of `epoch` from `[data]` (batch size, shuffle, augment).
    pub fn train(cfg: &DataConfig, seed: u64, epoch: u64) -> Self {
        Self {
            batch_size: cfg.batch_size,
            seed,
            epoch,
            shuffle: cfg.shuffle,
            augment: cfg.augment,
            drop_last: false,
        }
    }

    /// Number of batches over `n` images (0 when `batch_size` is 0).
    pub fn num_batches(&self, n: usize) -> usize {
        match self.batch_size {
            0 => 0,
            bs if self.drop_last => n / bs,
            bs => n.div_ceil(bs),
        }
    }

    /// The view of dataset image `index` under this plan.
    pub fn view(&self, index: usize) -> View {
        if self.augment {
            view_for(self.seed, self.epoch, index as u64)
        } else {
            View::IDENTITY
        }
    }

    /// The (dataset indices, views) of every batch over `n` images, in order.
    /// Yields nothing when `batch_size` is 0.
    pub fn batches(&self, n: usize) -> Batches {
        Batches {
            plan: *self,
            order: epoch_order(self.seed, self.epoch, n, self.shuffle),
            next: 0,
        }
    }
}

/// Iterator over the batches of an [`EpochPlan`]: (dataset indices, views).
#[derive(Debug, Clone)]
pub struct Batches {
    plan: EpochPlan,
    order: Vec<usize>,
    next: usize,
}

impl Batches {
    /// Batch number `b` (from 0), independent of iteration; `None` past the end.
    pub fn batch(&self, b: usize) -> Option<(Vec<usize>, Vec<View>)> {
        if b >= self.plan.num_batches(self.order.len()) {
            return None;
        }
        let start = b * self.plan.batch_size;
        let end = (start + self.plan.batch_size).min(self.order.len());
        let indices = self.order[start..end].to_vec();
        let views = indices.iter().map(|&i| self.plan.view(i)).collect();
        Some((indices, views))
    }
}

impl Iterator for Batches {
    type Item = (Vec<usize>, Vec<View>);

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.batch(self.next)?;
        self.next += 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self
            .plan
            .num_batches(self.order.len())
            .saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches {}

/// The batches of one epoch over `split`: shorthand for `plan.batches(split.len())`.
pub fn batches(split: &Split, plan: &EpochPlan) -> Batches {
    plan.batches(split.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn synthetic(n: usize) -> Split {
        let labels = (0..n).map(|i| (i % 10) as u8).collect();
        let images = (0..n * IMAGE_BYTES).map(|i| (i % 253) as u8).collect();
        Split::new(images, labels).unwrap()
    }

    fn plan(batch_size: usize, shuffle: bool, augment: bool, drop_last: bool) -> EpochPlan {
        EpochPlan {
            batch_size,
            seed: 5,
            epoch: 2,
            shuffle,
            augment,
            drop_last,
        }
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let n = 1000;
        let a = epoch_order(1, 0, n, true);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(1, 0, n, true));
        assert_ne!(a, epoch_order(1, 1, n, true));
        assert_ne!(a, epoch_order(2, 0, n, true));
        assert_ne!(a, sorted);
        assert_eq!(epoch_order(1, 0, n, false), sorted);
        assert!(epoch_order(1, 0, 0, true).is_empty());
    }

    #[test]
    fn batches_cover_the_epoch() {
        let p = plan(32, true, true, false);
        let all: Vec<_> = p.batches(100).collect();
        assert_eq!(all.len(), 4);
        assert_eq!(p.batches(100).len(), 4);
        assert_eq!(
            all.iter().map(|(i, _)| i.len()).collect::<Vec<_>>(),
            [32, 32, 32, 4]
        );
        let flat: Vec<usize> = all.iter().flat_map(|(i, _)| i.clone()).collect();
        assert_eq!(flat, epoch_order(5, 2, 100, true));
        for (idx, views) in &all {
            for (&i, &v) in idx.iter().zip(views) {
                assert_eq!(v, view_for(5, 2, i as u64));
            }
        }
        // Any batch can be rebuilt on its own.
        assert_eq!(p.batches(100).batch(2), Some(all[2].clone()));
        assert_eq!(p.batches(100).batch(4), None);

        let dropped = plan(32, true, true, true);
        assert_eq!(dropped.batches(100).count(), 3);
        let plain: Vec<_> = plan(40, false, false, false).batches(100).collect();
        assert_eq!(plain[2].0, (80..100).collect::<Vec<_>>());
        assert!(plain
            .iter()
            .all(|(_, v)| v.iter().all(|&v| v == View::IDENTITY)));
        assert_eq!(plan(0, true, true, false).batches(100).count(), 0);
    }

    #[test]
    fn make_batch_shapes_and_values() {
        let split = synthetic(20);
        let idx = [3, 17, 0];
        let views = [View::IDENTITY, View::raw(0, 8, true), View::IDENTITY];
        let b = make_batch(&split, &idx, &views, Device::Cpu).unwrap();
        assert_eq!(b.images.size(), [3, 3, 32, 32]);
        assert_eq!(b.images.kind(), Kind::Float);
        assert_eq!(b.labels.size(), [3]);
        assert_eq!(b.labels.kind(), Kind::Int64);
        assert_eq!(Vec::<i64>::try_from(&b.labels).unwrap(), [3, 7, 0]);
        assert_eq!(b.indices, [3, 17, 0]);
        let flat = Vec::<f32>::try_from(b.images.flatten(0, -1)).unwrap();
        let expect0: Vec<f32> = split.image(3).iter().map(|&p| p as f32 / 255.0).collect();
        assert_eq!(&flat[..IMAGE_BYTES], &expect0[..]);
        let mut expect1 = vec![0f32; IMAGE_BYTES];
        apply_view(split.image(17), views[1], &mut expect1);
        assert_eq!(&flat[IMAGE_BYTES..2 * IMAGE_BYTES], &expect1[..]);
        assert!(flat.iter().all(|&x| (0.0..=1.0).contains(&x)));

        assert!(make_batch(&split, &[20], &[View::IDENTITY], Device::Cpu).is_err());
        assert!(make_batch(&split, &[1, 2], &[View::IDENTITY], Device::Cpu).is_err());
        let empty = make_batch(&split, &[], &[], Device::Cpu).unwrap();
        assert_eq!(empty.images.size(), [0, 3, 32, 32]);
    }
}
