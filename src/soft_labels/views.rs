//! Which augmentation views the cache holds per image, and which view an image
//! is trained on in an epoch.
//!
//! - [`ViewSet::All`]: all 162 crop+flip views; slot = [`View::index`]. Training
//!   keeps the paper's augmentation exactly: the view of image `i` in epoch `e`
//!   is [`view_for`](crate::data::view_for)`(seed, e, i)`, as without a cache.
//! - [`ViewSet::Fixed`]`(K)`: each image has K fixed, distinct views
//!   ([`fixed_views`]), a function of the image index alone, so that every run
//!   (any seed) shares them; in epoch `e` image `i` is trained on its view number
//!   [`slot_for`]`(seed, e, i, K)`. This is the fast-KD trade: the teacher runs
//!   on at most K views per image (K x 50,000 forwards to fill the cache instead
//!   of 162 x 50,000), but the student sees only K of the 162 augmentations of
//!   each image, fewer distinct inputs than the paper's random crop+flip.

use crate::data::augment::splitmix64;
use crate::data::{View, NUM_VIEWS};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How the views of one image are laid out in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ViewSet {
    /// All 162 views, slot = `View::index()`.
    All,
    /// K fixed views per image (1..=162), slot k = `fixed_views(i, K)[k]`.
    Fixed(u16),
}

impl fmt::Display for ViewSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViewSet::All => f.write_str("all 162 views"),
            ViewSet::Fixed(k) => write!(f, "{k} fixed views per image"),
        }
    }
}

impl ViewSet {
    /// The view set of `[teacher] views`; `None` when K is not in 1..=162.
    pub fn from_config(views: crate::config::Views) -> Option<ViewSet> {
        match views {
            crate::config::Views::All => Some(ViewSet::All),
            crate::config::Views::Fixed(k) => u16::try_from(k)
                .ok()
                .filter(|&k| (1..=NUM_VIEWS as u16).contains(&k))
                .map(ViewSet::Fixed),
        }
    }

    /// Whether K is in range (a decoded header may hold anything).
    pub fn is_valid(self) -> bool {
        match self {
            ViewSet::All => true,
            ViewSet::Fixed(k) => (1..=NUM_VIEWS as u16).contains(&k),
        }
    }

    /// Cache slots per image: 162, or K.
    pub fn slots(self) -> usize {
        match self {
            ViewSet::All => NUM_VIEWS,
            ViewSet::Fixed(k) => usize::from(k),
        }
    }

    /// Short name used in cache file names: `all` or `kK`.
    pub fn file_tag(self) -> String {
        match self {
            ViewSet::All => "all".into(),
            ViewSet::Fixed(k) => format!("k{k}"),
        }
    }

    /// The slot of `view` of image `index`, or `None` when the set does not hold
    /// that view (an invalid view, or one outside the image's K fixed views).
    pub fn slot_of(self, index: u64, view: View) -> Option<usize> {
        if !view.is_valid() {
            return None;
        }
        match self {
            ViewSet::All => Some(usize::from(view.index())),
            ViewSet::Fixed(k) => fixed_views(index, usize::from(k))
                .iter()
                .position(|&v| v == view),
        }
    }

    /// The view in `slot` of image `index`; `None` when `slot >= slots()`.
    pub fn view_at(self, index: u64, slot: usize) -> Option<View> {
        match self {
            ViewSet::All => u16::try_from(slot).ok().and_then(View::from_index),
            ViewSet::Fixed(k) => fixed_views(index, usize::from(k)).get(slot).copied(),
        }
    }

    /// The views the images `indices` are trained on in `epoch`, given the
    /// views the epoch plan drew (`planned`, from `view_for`). `All` keeps the
    /// plan's views; `Fixed(K)` replaces each by one of the image's K fixed
    /// views, chosen by [`slot_for`]. Without augmentation (`augment = false`)
    /// the plan's identity views are kept.
    pub fn training_views(
        self,
        seed: u64,
        epoch: u64,
        augment: bool,
        indices: &[usize],
        planned: Vec<View>,
    ) -> Vec<View> {
        match self {
            ViewSet::Fixed(k) if augment => indices
                .iter()
                .map(|&i| {
                    let k = usize::from(k);
                    fixed_views(i as u64, k)[slot_for(seed, epoch, i as u64, k)]
                })
                .collect(),
            _ => planned,
        }
    }
}

/// Domain tag of the fixed views ("fixedvw1"); part of the cache's augmentation
/// policy ([`FIXED_VIEWS_POLICY`]): changing it changes every fixed view.
const FIXED_DOMAIN: u64 = 0x6669_7865_6476_7731;
/// Domain tag of the per-epoch slot choice ("slotpick").
const SLOT_DOMAIN: u64 = 0x736c_6f74_7069_636b;

/// Names the fixed-view construction below; stored in cache headers.
pub const FIXED_VIEWS_POLICY: &str = "fixed-views-splitmix64-fisher-yates-v1";

/// The first `k` views (`k <= 162`, clamped) of a permutation of all 162 views
/// keyed by image `index` alone: `k` distinct views, the same for every run.
pub fn fixed_views(index: u64, k: usize) -> Vec<View> {
    let k = k.min(NUM_VIEWS);
    let mut order: [u16; NUM_VIEWS] = std::array::from_fn(|v| v as u16);
    let key = splitmix64(FIXED_DOMAIN ^ splitmix64(index));
    for j in 0..k {
        let h = splitmix64(key.wrapping_add(j as u64));
        let r = j + (h % (NUM_VIEWS - j) as u64) as usize;
        order.swap(j, r);
    }
    order[..k]
        .iter()
        .filter_map(|&v| View::from_index(v))
        .collect()
}

/// Which of its `k` fixed views image `index` is trained on in `epoch`: a keyed
/// hash of (seed, epoch, index), uniform over `0..k` (`k >= 1`).
pub fn slot_for(seed: u64, epoch: u64, index: u64, k: usize) -> usize {
    let h = splitmix64(splitmix64(splitmix64(seed ^ SLOT_DOMAIN) ^ epoch) ^ index);
    (h % k.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_views_are_distinct_stable_prefixes() {
        for i in [0u64, 1, 49_999] {
            let all = fixed_views(i, NUM_VIEWS);
            let mut idx: Vec<u16> = all.iter().map(|v| v.index()).collect();
            idx.sort_unstable();
            assert_eq!(idx, (0..NUM_VIEWS as u16).collect::<Vec<_>>());
            assert_eq!(fixed_views(i, 4), all[..4]);
            assert_eq!(fixed_views(i, 4), fixed_views(i, 4));
        }
        assert_ne!(fixed_views(0, 8), fixed_views(1, 8));
    }

    #[test]
    fn slots_round_trip() {
        for set in [
            ViewSet::All,
            ViewSet::Fixed(1),
            ViewSet::Fixed(5),
            ViewSet::Fixed(162),
        ] {
            for i in [3u64, 77] {
                for s in 0..set.slots() {
                    let v = set.view_at(i, s).unwrap();
                    assert_eq!(set.slot_of(i, v), Some(s), "{set:?} {i} {s}");
                }
                assert_eq!(set.view_at(i, set.slots()), None);
            }
        }
        // A view outside an image's fixed set has no slot.
        let inside = fixed_views(9, 2);
        let outside = View::all().find(|v| !inside.contains(v)).unwrap();
        assert_eq!(ViewSet::Fixed(2).slot_of(9, outside), None);
    }

    #[test]
    fn training_views_follow_the_policy() {
        let idx = [0usize, 5, 9];
        let planned: Vec<View> = idx
            .iter()
            .map(|&i| crate::data::view_for(1, 2, i as u64))
            .collect();
        assert_eq!(
            ViewSet::All.training_views(1, 2, true, &idx, planned.clone()),
            planned
        );
        let fixed = ViewSet::Fixed(3).training_views(1, 2, true, &idx, planned.clone());
        for (&i, v) in idx.iter().zip(&fixed) {
            assert!(fixed_views(i as u64, 3).contains(v));
        }
        let ident = vec![View::IDENTITY; 3];
        assert_eq!(
            ViewSet::Fixed(3).training_views(1, 2, false, &idx, ident.clone()),
            ident
        );
        // Every slot gets used over epochs.
        let used: std::collections::HashSet<usize> =
            (0..64).map(|e| slot_for(1, e, 5, 3)).collect();
        assert_eq!(used.len(), 3);
    }
}
