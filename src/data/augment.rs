//! Augmentation views, as in the paper: `RandomCrop(32, padding=4)` (zero
//! padding) then `RandomHorizontalFlip`, on inputs in `[0, 1]`, no normalisation.
//!
//! A [`View`] is one outcome of that random choice: the crop's top-left corner
//! `(dy, dx)` inside the 40x40 zero-padded image (each in `0..=8`) and whether
//! to flip, 9 * 9 * 2 = [`NUM_VIEWS`] in all. The view of an image is a keyed
//! hash of (seed, epoch, index) ([`view_for`]), not a draw from a sequential
//! RNG, so any batch can be rebuilt on its own and soft labels can be cached
//! per (index, view).

use super::cifar::{IMAGE_BYTES, IMAGE_SIZE};

/// Zero padding on each side before the crop.
pub const PADDING: u8 = 4;
/// Largest crop offset: `2 * PADDING`.
pub const MAX_OFFSET: u8 = 2 * PADDING;
/// Number of distinct views: 9 x-offsets * 9 y-offsets * 2 flips.
pub const NUM_VIEWS: usize = 162;

const OFFSETS: u16 = MAX_OFFSET as u16 + 1;

/// One augmentation outcome: crop offset in the padded image, then an optional flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct View {
    /// Column of the crop's left edge in the 40x40 padded image, `0..=8`.
    pub dx: u8,
    /// Row of the crop's top edge in the 40x40 padded image, `0..=8`.
    pub dy: u8,
    /// Mirror left-right after cropping.
    pub flip: bool,
}

impl View {
    /// The view that leaves an image unchanged (centre crop, no flip).
    pub const IDENTITY: View = View {
        dx: PADDING,
        dy: PADDING,
        flip: false,
    };

    /// A view, or `None` when an offset is above 8.
    pub fn new(dx: u8, dy: u8, flip: bool) -> Option<View> {
        (dx <= MAX_OFFSET && dy <= MAX_OFFSET).then_some(View { dx, dy, flip })
    }

    /// Any view, out-of-range offsets included: for tests.
    #[cfg(test)]
    pub(crate) const fn raw(dx: u8, dy: u8, flip: bool) -> View {
        View { dx, dy, flip }
    }

    /// True when both offsets are in `0..=8`.
    pub fn is_valid(self) -> bool {
        self.dx <= MAX_OFFSET && self.dy <= MAX_OFFSET
    }

    /// The view's number in `0..162`: `(dy * 9 + dx) * 2 + flip`.
    /// Only meaningful for valid views ([`View::is_valid`]).
    pub fn index(self) -> u16 {
        (u16::from(self.dy) * OFFSETS + u16::from(self.dx)) * 2 + u16::from(self.flip)
    }

    /// The view numbered `index`, inverse of [`View::index`]; `None` when `index >= 162`.
    pub fn from_index(index: u16) -> Option<View> {
        if usize::from(index) >= NUM_VIEWS {
            return None;
        }
        let cell = index / 2;
        Some(View {
            dx: (cell % OFFSETS) as u8,
            dy: (cell / OFFSETS) as u8,
            flip: index % 2 == 1,
        })
    }

    /// All 162 views, in index order.
    pub fn all() -> impl Iterator<Item = View> {
        (0..NUM_VIEWS as u16).filter_map(View::from_index)
    }
}

/// splitmix64's finaliser: a fast, well-mixed 64-bit hash.
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Domain tag, so view hashes differ from other uses of the same seed.
const VIEW_DOMAIN: u64 = 0x7669_6577_7331_3632; // "views162"

/// The view of dataset image `index` in `epoch` under `seed`: a keyed hash of the
/// three, uniform over the 162 views (bias below 1e-17), independent of any order.
pub fn view_for(seed: u64, epoch: u64, index: u64) -> View {
    let h = splitmix64(splitmix64(splitmix64(seed ^ VIEW_DOMAIN) ^ epoch) ^ index);
    View::from_index((h % NUM_VIEWS as u64) as u16).expect("below NUM_VIEWS")
}

/// Writes `view` of `image` (3072 CHW bytes) into `out` (3072 floats) as
/// pixel / 255, with zeros where the crop leaves the image.
///
/// Same result as torchvision's `RandomCrop(32, padding=4)` with top-left
/// `(dy, dx)` then (if `flip`) `hflip`, on `ToTensor()` input: output pixel
/// `(r, c)` is `original[r + dy - 4][c' + dx - 4]` with `c' = 31 - c` when
/// flipped and `c' = c` otherwise. Offsets above 8 give more zeros, never a panic.
///
/// # Panics
/// If `image` or `out` is not 3072 long.
pub fn apply_view(image: &[u8], view: View, out: &mut [f32]) {
    assert_eq!(
        image.len(),
        IMAGE_BYTES,
        "apply_view: image must be 3072 bytes"
    );
    assert_eq!(
        out.len(),
        IMAGE_BYTES,
        "apply_view: out must be 3072 floats"
    );
    const S: usize = IMAGE_SIZE;
    let pad = usize::from(PADDING);
    let (dx, dy) = (usize::from(view.dx), usize::from(view.dy));
    // Output columns c whose source column c + dx - pad lies in 0..S.
    let c_lo = pad.saturating_sub(dx).min(S);
    let c_hi = (S + pad).saturating_sub(dx).clamp(c_lo, S);
    for (src_ch, dst_ch) in image.chunks_exact(S * S).zip(out.chunks_exact_mut(S * S)) {
        for (r, dst_row) in dst_ch.chunks_exact_mut(S).enumerate() {
            let sr = (r + dy).wrapping_sub(pad);
            if sr >= S {
                dst_row.fill(0.0);
                continue;
            }
            let src_row = &src_ch[sr * S..(sr + 1) * S];
            // Unflipped row: zeros, then src_row[c_lo + dx - pad .. c_hi + dx - pad], then zeros.
            let src = &src_row[(c_lo + dx - pad).min(S)..(c_hi + dx).saturating_sub(pad).min(S)];
            let (lo, hi) = if view.flip {
                (S - c_hi, S - c_lo)
            } else {
                (c_lo, c_hi)
            };
            dst_row[..lo].fill(0.0);
            dst_row[hi..].fill(0.0);
            let dst = &mut dst_row[lo..hi];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = f32::from(s) / 255.0;
            }
            if view.flip {
                dst.reverse();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward reference: pad to 40x40, crop, flip.
    fn reference(image: &[u8], v: View) -> Vec<f32> {
        let mut out = vec![0.0; IMAGE_BYTES];
        for ch in 0..3 {
            for r in 0..32 {
                for c in 0..32 {
                    let cc = if v.flip { 31 - c } else { c };
                    let (pr, pc) = (r as i64 + v.dy as i64 - 4, cc as i64 + v.dx as i64 - 4);
                    if (0..32).contains(&pr) && (0..32).contains(&pc) {
                        out[ch * 1024 + r * 32 + c] =
                            image[ch * 1024 + pr as usize * 32 + pc as usize] as f32 / 255.0;
                    }
                }
            }
        }
        out
    }

    fn test_image() -> Vec<u8> {
        (0..IMAGE_BYTES).map(|i| (i * 7 % 256) as u8).collect()
    }

    #[test]
    fn index_is_a_bijection() {
        let mut seen = [false; NUM_VIEWS];
        for i in 0..NUM_VIEWS as u16 {
            let v = View::from_index(i).unwrap();
            assert!(v.is_valid());
            assert_eq!(v.index(), i);
            assert!(!std::mem::replace(&mut seen[i as usize], true));
        }
        assert_eq!(View::all().count(), NUM_VIEWS);
        assert_eq!(View::from_index(162), None);
        assert_eq!(View::new(9, 0, false), None);
        assert_eq!(View::new(4, 4, false), Some(View::IDENTITY));
    }

    #[test]
    fn identity_is_plain_scaling() {
        let img = test_image();
        let mut out = vec![-1.0; IMAGE_BYTES];
        apply_view(&img, View::IDENTITY, &mut out);
        for (o, &p) in out.iter().zip(&img) {
            assert_eq!(*o, p as f32 / 255.0);
        }
    }

    #[test]
    fn hand_computed_crop_and_flip() {
        // Channel 0, row 0 holds 1..=32; everything else is zero.
        let mut img = vec![0u8; IMAGE_BYTES];
        for (c, p) in img[..32].iter_mut().enumerate() {
            *p = c as u8 + 1;
        }
        let v = |x: u8| x as f32 / 255.0;
        let mut out = vec![-1.0; IMAGE_BYTES];

        // dy = 3: padded row 3 is padding, so output row 1 is original row 0.
        // dx = 6: output column c shows original column c + 2; the last 2 are zero.
        apply_view(&img, View::raw(6, 3, false), &mut out);
        assert!(out[..32].iter().all(|&x| x == 0.0));
        assert_eq!(out[32], v(3));
        assert_eq!(out[32 + 29], v(32));
        assert_eq!(&out[32 + 30..64], &[0.0, 0.0]);
        assert_eq!(out.iter().filter(|&&x| x != 0.0).count(), 30);

        // Same with flip: the row is reversed, zeros come first.
        apply_view(&img, View::raw(6, 3, true), &mut out);
        assert_eq!(&out[32..34], &[0.0, 0.0]);
        assert_eq!(out[34], v(32));
        assert_eq!(out[63], v(3));

        // dx = 0, dy = 8: columns shift right by 4, rows up by 4 (row 0 gone).
        apply_view(&img, View::raw(0, 8, false), &mut out);
        assert!(out.iter().all(|&x| x == 0.0));
        apply_view(&img, View::raw(0, 0, false), &mut out);
        assert_eq!(&out[4 * 32..4 * 32 + 5], &[0.0, 0.0, 0.0, 0.0, v(1)]);
        assert_eq!(out[4 * 32 + 31], v(28));
    }

    #[test]
    fn all_views_match_reference() {
        let img = test_image();
        let mut out = vec![-1.0; IMAGE_BYTES];
        for v in View::all() {
            apply_view(&img, v, &mut out);
            assert_eq!(out, reference(&img, v), "{v:?}");
        }
        // Out-of-range offsets do not panic and only add zeros.
        for v in [View::raw(200, 4, true), View::raw(4, 255, false)] {
            apply_view(&img, v, &mut out);
            assert!(out.iter().all(|&x| x == 0.0));
        }
    }

    #[test]
    fn view_for_is_deterministic_and_uniform() {
        assert_eq!(view_for(1, 2, 3), view_for(1, 2, 3));
        let n = 162 * 1000;
        let mut counts = [0usize; NUM_VIEWS];
        for i in 0..n as u64 {
            counts[view_for(7, 3, i).index() as usize] += 1;
        }
        // Each count ~ Binomial(n, 1/162): mean 1000, sd ~31.5; allow 6 sd.
        assert!(
            counts.iter().all(|&c| (811..=1189).contains(&c)),
            "{counts:?}"
        );
        let differ =
            |f: &dyn Fn(u64) -> View| (0..1000).filter(|&i| f(i) != view_for(7, 3, i)).count();
        assert!(differ(&|i| view_for(8, 3, i)) > 950);
        assert!(differ(&|i| view_for(7, 4, i)) > 950);
        assert!(differ(&|i| view_for(7, 3, i + 1)) > 950);
    }
}
