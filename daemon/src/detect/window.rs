//! The statistics of a sliding window: running mean and `M2` updated in
//! O(1) per point, kept exact by a two-pass recompute on wrap and on
//! cancellation (see the folder documentation, "Cost and accuracy").

/// Recompute exactly when `M2` drops below this fraction of the largest `M2`
/// seen since the last exact recomputation (see the module docs).
const CANCELLATION_RATIO: f64 = 1e-4;

/// Largest supported window capacity (indices are stored as `u32`).
const MAX_CAPACITY: usize = u32::MAX as usize;

pub(super) fn clamp_capacity(capacity: usize) -> usize {
    capacity.clamp(1, MAX_CAPACITY)
}

/// Running statistics of a sliding window whose points live elsewhere.
///
/// The ring of the `capacity` most recent points is a `&mut [f64]` the caller
/// owns and passes to every call that reads or writes points; its length is
/// the capacity. This lets a table of many series keep all rings in a few
/// large blocks instead of one allocation per series (see `series`).
/// Passing a ring of another length than before is a logic error: results
/// are then unspecified (it may panic, it never reads out of bounds).
///
/// [`SlidingWindow`] bundles these statistics with a ring of its own.
/// Memory: 40 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WindowStats {
    /// Running mean of the points in the window (0 when empty).
    mean: f64,
    /// Running sum of squared deviations from the mean.
    m2: f64,
    /// [`CANCELLATION_RATIO`] times the largest `m2` since the last exact
    /// recomputation: `m2` below this means cancellation.
    m2_floor: f64,
    /// `1 / len` (0 when empty).
    inv_n: f64,
    /// Index of the oldest point (the next one overwritten once full).
    /// While the window is not full, `head == 0` and the points are
    /// `ring[..len]`.
    head: u32,
    /// Number of points in the window.
    len: u32,
}

impl WindowStats {
    /// Statistics of an empty window.
    pub const fn new() -> Self {
        Self {
            mean: 0.0,
            m2: 0.0,
            m2_floor: 0.0,
            inv_n: 0.0,
            head: 0,
            len: 0,
        }
    }

    /// Number of points held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// `true` when the window holds no point.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Mean of the points in the window (0 when empty).
    #[inline]
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Population standard deviation of the points in the window (0 when the
    /// window holds at most one point).
    #[inline]
    pub fn std_dev(&self) -> f64 {
        // `m2` is never negative after `push` (a negative value triggers a
        // recomputation); `fmax` is a cheap guard all the same.
        fmax(self.m2 * self.inv_n, 0.0).sqrt()
    }

    /// Add `x` to the window stored in `ring`, evicting the oldest point when
    /// the window is full.
    #[inline(always)]
    pub fn push(&mut self, ring: &mut [f64], x: f64) {
        let head = self.head as usize;
        if self.len() == ring.len() {
            let old = ring[head];
            ring[head] = x;
            // Sliding Welford: replace `old` by `x`, n unchanged.
            let mean = self.mean;
            let delta = x - old;
            let new_mean = mean + delta * self.inv_n;
            self.m2 += delta * ((x - new_mean) + (old - mean));
            self.mean = new_mean;
            let next = head + 1;
            if next == ring.len() {
                // The ring wrapped: `capacity` updates since the last
                // periodic recomputation.
                self.head = 0;
                self.recompute(ring);
                return;
            }
            self.head = next as u32;
        } else if self.grow(ring, x) {
            return;
        }
        // Cancellation (also catches `m2 < 0`, as the floor is >= 0).
        if self.m2 < self.m2_floor {
            self.recompute(ring);
            return;
        }
        self.m2_floor = fmax(self.m2_floor, self.m2 * CANCELLATION_RATIO);
    }

    /// Growth phase (window not full): standard Welford addition. Returns
    /// `true` when the window just became full, after recomputing exactly.
    #[inline(always)]
    fn grow(&mut self, ring: &mut [f64], x: f64) -> bool {
        debug_assert_eq!(self.head, 0);
        let i = self.len();
        ring[i] = x;
        self.len += 1;
        if self.len() == ring.len() {
            self.recompute(ring);
            return true;
        }
        self.inv_n = 1.0 / self.len as f64;
        let delta = x - self.mean;
        self.mean += delta * self.inv_n;
        self.m2 += delta * (x - self.mean);
        false
    }

    /// Exact (two-pass, corrected) recomputation of mean and `M2` from the
    /// points in the window.
    #[cold]
    #[inline(never)]
    fn recompute(&mut self, ring: &[f64]) {
        let len = self.len();
        if len == 0 {
            *self = Self::new();
            return;
        }
        // Either the window is full or `head == 0`: the points are
        // `ring[..len]` in some rotation, and sums do not care about order.
        let points = &ring[..len];
        let inv_n = 1.0 / len as f64;
        let mean0 = sum4(points) * inv_n;
        let (dev, sq) = dev_sums(points, mean0);
        // `dev` is n times the rounding error of `mean0` (the corrected
        // two-pass algorithm).
        self.mean = mean0 + dev * inv_n;
        self.m2 = fmax(sq - dev * dev * inv_n, 0.0);
        self.m2_floor = self.m2 * CANCELLATION_RATIO;
        self.inv_n = inv_n;
    }

    /// Moves the window from ring `old` to ring `new` (of another capacity,
    /// at least 1), keeping the most recent points (the oldest are dropped
    /// when `new` is shorter). The statistics are recomputed exactly.
    pub fn move_to(&mut self, old: &[f64], new: &mut [f64]) {
        let keep = self.len().min(new.len());
        for (slot, x) in new.iter_mut().zip(self.iter(old).skip(self.len() - keep)) {
            *slot = x;
        }
        self.head = 0;
        self.len = keep as u32;
        self.recompute(new);
    }

    /// The points of the window stored in `ring`, oldest first.
    pub fn iter<'a>(&self, ring: &'a [f64]) -> impl Iterator<Item = f64> + 'a {
        let len = self.len();
        let head = self.head as usize;
        // When not full, head == 0 and the first part is `ring[..len]`.
        let first_end = (head + len).min(ring.len());
        let wrapped = head + len - first_end;
        ring[head..first_end]
            .iter()
            .chain(ring[..wrapped].iter())
            .copied()
    }
}

/// Sliding window with O(1) amortised mean / population std.
///
/// A ring buffer `R` of the `capacity` most recent points with its
/// [`WindowStats`] (a running mean and `M2`, the sum of squared deviations),
/// kept close to an exact two-pass computation (see the module docs).
/// `SlidingWindow` (with `R = Box<[f64]>`) owns its ring: one heap allocation
/// of `capacity` `f64`s plus 56 bytes. With `R = &[f64]` it is a read-only
/// view of a window whose ring lives elsewhere ([`super::moving_average::SeriesDetector::window`]).
#[derive(Clone, Debug)]
pub struct SlidingWindow<R = Box<[f64]>> {
    pub(super) stats: WindowStats,
    /// Ring storage; its length is the capacity.
    pub(super) ring: R,
}

impl SlidingWindow {
    /// An empty window holding at most `capacity` points (`capacity` is
    /// clamped to `1..=u32::MAX`).
    pub fn new(capacity: usize) -> Self {
        Self {
            stats: WindowStats::new(),
            ring: vec![0.0; clamp_capacity(capacity)].into_boxed_slice(),
        }
    }

    /// Add `x`, evicting the oldest point when the window is full.
    #[inline(always)]
    pub fn push(&mut self, x: f64) {
        self.stats.push(&mut self.ring, x);
    }

    /// Resize to `new_capacity` (clamped to `1..=u32::MAX`), keeping the most
    /// recent points (the oldest are dropped when shrinking). The statistics
    /// are recomputed exactly.
    pub fn resize(&mut self, new_capacity: usize) {
        let new_capacity = clamp_capacity(new_capacity);
        if new_capacity == self.capacity() {
            return;
        }
        let mut ring = vec![0.0; new_capacity].into_boxed_slice();
        self.stats.move_to(&self.ring, &mut ring);
        self.ring = ring;
    }
}

impl<R: AsRef<[f64]>> SlidingWindow<R> {
    /// Maximum number of points held.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.ring.as_ref().len()
    }

    /// Number of points held.
    #[inline]
    pub fn len(&self) -> usize {
        self.stats.len()
    }

    /// `true` when the window holds no point.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.stats.is_empty()
    }

    /// Mean of the points in the window (0 when empty).
    #[inline]
    pub fn mean(&self) -> f64 {
        self.stats.mean()
    }

    /// Population standard deviation of the points in the window (0 when the
    /// window holds at most one point).
    #[inline]
    pub fn std_dev(&self) -> f64 {
        self.stats.std_dev()
    }

    /// The points in the window, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        self.stats.iter(self.ring.as_ref())
    }
}

/// `max(a, b)` for non-NaN operands (a single `maxsd`, unlike `f64::max`).
#[inline(always)]
pub(super) fn fmax(a: f64, b: f64) -> f64 {
    if a > b { a } else { b }
}

/// Sum of `xs` with four independent accumulators.
#[inline]
fn sum4(xs: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let mut chunks = xs.chunks_exact(4);
    for c in &mut chunks {
        for j in 0..4 {
            acc[j] += c[j];
        }
    }
    let mut tail = 0.0;
    for &x in chunks.remainder() {
        tail += x;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `(Σ(x − m), Σ(x − m)²)` over `xs`, four accumulators each.
#[inline]
fn dev_sums(xs: &[f64], m: f64) -> (f64, f64) {
    let mut d = [0.0f64; 4];
    let mut q = [0.0f64; 4];
    let mut chunks = xs.chunks_exact(4);
    for c in &mut chunks {
        for j in 0..4 {
            let e = c[j] - m;
            d[j] += e;
            q[j] += e * e;
        }
    }
    let (mut dt, mut qt) = (0.0, 0.0);
    for &x in chunks.remainder() {
        let e = x - m;
        dt += e;
        qt += e * e;
    }
    (
        (d[0] + d[1]) + (d[2] + d[3]) + dt,
        (q[0] + q[1]) + (q[2] + q[3]) + qt,
    )
}
