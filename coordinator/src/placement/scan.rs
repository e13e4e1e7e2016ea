//! The one-pass decision for a filtered eligible list (task requirements, nodes that
//! refused the task), which no cached index describes; also the reference the heaps
//! are tested against.

/// The slot with the lowest cost `num / den` (den > 0); ties go to the first in
/// `eligible`. Compared by cross-multiplying, over four independent running minimums.
/// About 2 ns per node: the reference for the heaps in tests, and the decision for
/// filtered lists, which no index describes.
pub(super) fn min_ratio(eligible: &[usize], cost: impl Fn(usize) -> (f64, f64)) -> usize {
    const LANES: usize = 4;
    // (position in eligible, num, den) per lane.
    let first = cost(eligible[0]);
    let mut best = [(0usize, first.0, first.1); LANES];
    let chunks = eligible.chunks_exact(LANES);
    let rest = chunks.remainder();
    for (c, chunk) in chunks.enumerate() {
        for lane in 0..LANES {
            let (num, den) = cost(chunk[lane]);
            let b = &mut best[lane];
            if num * b.2 < b.1 * den {
                *b = (c * LANES + lane, num, den);
            }
        }
    }
    let base = eligible.len() - rest.len();
    for (k, &s) in rest.iter().enumerate() {
        let (num, den) = cost(s);
        let b = &mut best[0];
        if num * b.2 < b.1 * den {
            *b = (base + k, num, den);
        }
    }
    let mut win = best[0];
    for b in &best[1..] {
        let (l, r) = (b.1 * win.2, win.1 * b.2);
        if l < r || (l == r && b.0 < win.0) {
            win = *b;
        }
    }
    eligible[win.0]
}
