//! Eigenvalues only of a real symmetric matrix, by two-stage tridiagonalisation — the
//! FID hot spot (`eigvalsh` of a 2048 × 2048 matrix).
//!
//! One-stage Householder tridiagonalisation (LAPACK `dsytrd`, faer's `tridiag`) spends half
//! its flops in matrix–vector products over the whole trailing matrix: memory-bound, one
//! pass over ~16 MB per column. The two-stage scheme (LAPACK `dsytrd_2stage`) moves those
//! flops into matrix–matrix products:
//!
//! 1. **dense → band** (bandwidth [`BAND`]): blocked Householder QR of each column panel
//!    below the band, `Q = I − V T Vᵀ` (compact WY), and the two-sided trailing update
//!    `A ← A − V Wᵀ − W Vᵀ` with `W = X − ½ V (Tᵀ Vᵀ X)`, `X = A V T` — all faer GEMMs on
//!    all cores. Only the lower triangle of A is read or updated (`X` as tril(A)·Y +
//!    stril(A)ᵀ·Y, the update into the lower triangle only): a third fewer flops than
//!    updating the full matrix. The stage is memory-bound, so panel k's update and panel
//!    k+1's product X are fused into one tiled sweep (look-ahead on panel k+1's columns):
//!    A is read and written once per panel instead of read three times and written once.
//! 2. **band → tridiagonal**: bulge chasing (Schwarz; the kernels of LAPACK `dsb2st`): each
//!    sweep annihilates one column with a Householder reflector and chases the bulge it
//!    creates down the band, one `BAND`-sized block at a time, in a compact band store that
//!    fits in cache (`n × (2·BAND + 2)` f64; bulges reach `2·BAND − 1` below the diagonal).
//!    Two threads chase at once — even and odd sweeps, each a block behind the previous
//!    sweep — with a result bit-identical to one thread.
//! 3. **tridiagonal → eigenvalues**: root-free implicit QL with Wilkinson shifts
//!    (Pal–Walker–Kahan, LAPACK `dsterf`).
//!
//! Every step is an orthogonal similarity (backward stable), so the eigenvalues equal the
//! one-stage solver's to rounding (tested against faer's `self_adjoint_eigenvalues`).
//! Matrices smaller than [`SMALL`] go straight to faer's one-stage solver.

use anyhow::{anyhow, bail, Result};
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};

use faer::{Accum, Mat, Side};

/// Bandwidth of stage 1: wide enough for efficient GEMMs, narrow enough that stage 2
/// (≈ 6·n²·BAND flops, single-threaded) stays cheap.
pub const BAND: usize = 32;

/// Below this size the one-stage solver is as fast and simpler.
pub const SMALL: usize = 256;

/// Eigenvalues (unsorted) of the symmetric matrix whose **lower triangle** is `a` (the
/// strict upper triangle is ignored).
pub fn sym_eigenvalues(a: Mat<f64>) -> Result<Vec<f64>> {
    if a.nrows() != a.ncols() {
        bail!(
            "eigenvalues of a non-square matrix ({} × {})",
            a.nrows(),
            a.ncols()
        );
    }
    if a.nrows() < SMALL {
        let lam = a
            .self_adjoint_eigenvalues(Side::Lower)
            .map_err(|e| anyhow!("symmetric eigenvalue solver failed: {e:?}"))?;
        return Ok(lam);
    }
    two_stage(a, BAND)
}

/// The two-stage solver with an explicit bandwidth (tests use small bands on small
/// matrices to exercise every code path).
pub fn two_stage(mut a: Mat<f64>, band: usize) -> Result<Vec<f64>> {
    let n = a.nrows();
    if n == 0 {
        return Ok(Vec::new());
    }
    if let Some((i, j)) = first_non_finite(&a) {
        bail!("the matrix has a non-finite entry at ({i}, {j})");
    }
    let band = band.max(1);
    dense_to_band(&mut a, band);
    let mut store = BandStore::from_dense(&a, band);
    drop(a);
    store.chase_to_tridiagonal_par();
    let (mut d, mut e) = store.tridiagonal();
    // Scale to max |entry| = 1 so that the QL rotations can use a plain sqrt(f² + g²)
    // (no overflow possible; hypot is several times slower), and back.
    let scale = d.iter().chain(&e).fold(0.0f64, |m, x| m.max(x.abs()));
    if scale > 0.0 {
        d.iter_mut().chain(e.iter_mut()).for_each(|x| *x /= scale);
    }
    tridiagonal_eigenvalues(&mut d, &mut e)?;
    if scale > 0.0 {
        d.iter_mut().for_each(|x| *x *= scale);
    }
    Ok(d)
}

fn first_non_finite(a: &Mat<f64>) -> Option<(usize, usize)> {
    for j in 0..a.ncols() {
        for i in j..a.nrows() {
            if !a[(i, j)].is_finite() {
                return Some((i, j));
            }
        }
    }
    None
}

/// Dot product with four independent accumulators (so the compiler can vectorise it).
#[inline]
fn dot(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let mut acc = [0.0f64; 4];
    let mut xc = x.chunks_exact(4);
    let mut yc = y.chunks_exact(4);
    for (a, b) in (&mut xc).zip(&mut yc) {
        for l in 0..4 {
            acc[l] += a[l] * b[l];
        }
    }
    let tail: f64 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// A Householder reflector `H = I − τ v vᵀ` (v₀ = 1) with `H x = β e₁`; `x[1..]` is
/// overwritten with `v[1..]`. Returns (τ, β); τ = 0 when x is already a multiple of e₁.
fn householder(x: &mut [f64]) -> (f64, f64) {
    let alpha = x[0];
    let xnorm = x[1..].iter().map(|v| v * v).sum::<f64>().sqrt();
    if xnorm == 0.0 {
        return (0.0, alpha);
    }
    let beta = -alpha.hypot(xnorm).copysign(alpha);
    let tau = (beta - alpha) / beta;
    let scale = 1.0 / (alpha - beta);
    for v in &mut x[1..] {
        *v *= scale;
    }
    (tau, beta)
}

/// Tile size of stage 1's fused sweep: a 256 × 256 f64 tile (512 KB) stays in L2 between
/// its update and its products.
const TILE: usize = 256;

/// The reflectors of one panel: `V` (m × nr, unit lower trapezoidal) in the left half of
/// `uw`, and `T` (nr × nr, upper triangular) with `Q = I − V T Vᵀ`.
struct Panel {
    /// First row/column of the trailing block the panel's similarity acts on.
    r0: usize,
    /// Rows of that block (`n − r0`).
    m: usize,
    /// Reflectors.
    nr: usize,
    t: Mat<f64>,
}

/// Stage 1: orthogonal similarity to bandwidth `band` (entries with i − j > band become 0).
/// `a` holds the full symmetric matrix; on return its lower band is valid.
///
/// Per panel: QR of the column panel below the band (`Q = I − V T Vᵀ`), then the
/// two-sided update of the trailing block A22 ← A22 − V Wᵀ − W Vᵀ, with `W = X − ½ V Z`,
/// `X = A22 V T`, `Z = Tᵀ Vᵀ X`. The stage is memory-bound (A22 is ~16 MB at d = 2048), so
/// panel k's update and panel k+1's product `X` are fused into one sweep over A22 in L2-sized
/// tiles: panel k+1's columns are updated first (look-ahead) and factored, then each tile
/// is updated and immediately multiplied while it is in cache — one read and one write of
/// A22 per panel instead of three reads and a write.
fn dense_to_band(a: &mut Mat<f64>, band: usize) {
    let n = a.nrows();
    if band + 1 >= n {
        return;
    }
    let par = faer::get_global_parallelism();
    // Work buffers, allocated once (fresh 1 MB blocks per panel cost page faults), two
    // sets used in turn (the pending update's and the next panel's): `p` the panel,
    // `uw` = [V W], `wv` = [W V], `y` = V T.
    let mut p = vec![0.0; n * band];
    let mut uw = [
        Mat::<f64>::zeros(n, 2 * band),
        Mat::<f64>::zeros(n, 2 * band),
    ];
    let mut wv = [
        Mat::<f64>::zeros(n, 2 * band),
        Mat::<f64>::zeros(n, 2 * band),
    ];
    let mut y = Mat::<f64>::zeros(n, band);
    // The first panel: X = A22 Y over the whole trailing block, as-is.
    let mut cur = 0;
    let mut pan = panel_qr(a, 0, band, &mut p, &mut uw[cur]);
    {
        let (m, nr) = (pan.m, pan.nr);
        let mut y = y.as_mut().submatrix_mut(0, 0, m, nr);
        let (v, mut x) = uw[cur]
            .as_mut()
            .submatrix_mut(0, 0, m, 2 * nr)
            .split_at_col_mut(nr);
        matmul(
            y.as_mut(),
            Accum::Replace,
            v.as_ref(),
            pan.t.as_ref(),
            1.0,
            par,
        );
        // A22 is symmetric and only its lower triangle is kept current.
        let a22 = a.as_ref().submatrix(pan.r0, pan.r0, m, m);
        sym_lower_matmul(x.as_mut(), Accum::Replace, a22, y.as_ref(), par);
    }
    form_w(&mut uw[cur], &mut wv[cur], &pan, par);
    loop {
        let (r0, m, nr) = (pan.r0, pan.m, pan.nr);
        // Panel k+1 starts at column r0; it exists while a column has two rows below the band.
        if r0 + band + 1 >= n {
            // The last update: the whole lower triangle of A22, one GEMM.
            tri_matmul(
                a.as_mut().submatrix_mut(r0, r0, m, m),
                BlockStructure::TriangularLower,
                Accum::Add,
                uw[cur].as_ref().submatrix(0, 0, m, 2 * nr),
                BlockStructure::Rectangular,
                wv[cur].as_ref().submatrix(0, 0, m, 2 * nr).transpose(),
                BlockStructure::Rectangular,
                -1.0,
                par,
            );
            return;
        }
        // Look-ahead: the pending update on panel k+1's columns (A22's first `band`
        // columns: a lower-triangular block in the band, the panel below it).
        {
            let uwc = uw[cur].as_ref().submatrix(0, 0, m, 2 * nr);
            let wvc = wv[cur].as_ref().submatrix(0, 0, band, 2 * nr);
            let strip = a.as_mut().submatrix_mut(r0, r0, m, band);
            let (top, below) = strip.split_at_row_mut(band);
            tri_matmul(
                top,
                BlockStructure::TriangularLower,
                Accum::Add,
                uwc.submatrix(0, 0, band, 2 * nr),
                BlockStructure::Rectangular,
                wvc.transpose(),
                BlockStructure::Rectangular,
                -1.0,
                par,
            );
            matmul(
                below,
                Accum::Add,
                uwc.submatrix(band, 0, m - band, 2 * nr),
                wvc.transpose(),
                -1.0,
                par,
            );
        }
        let next = 1 - cur;
        let npan = panel_qr(a, r0, band, &mut p, &mut uw[next]);
        let (m2, nr2) = (npan.m, npan.nr);
        let mut y2 = y.as_mut().submatrix_mut(0, 0, m2, nr2);
        matmul(
            y2.as_mut(),
            Accum::Replace,
            uw[next].as_ref().submatrix(0, 0, m2, nr2),
            npan.t.as_ref(),
            1.0,
            par,
        );
        // The fused sweep over A33 = A22 minus its first `band` rows and columns (panel
        // k+1's trailing block): update each tile with panel k's [V W][W V]ᵀ, then add its
        // share of X' = A33 Y'.
        let x2 = fused_update_product(
            a.as_mut().submatrix_mut(npan.r0, npan.r0, m2, m2),
            uw[cur].as_ref().submatrix(band, 0, m2, 2 * nr),
            wv[cur].as_ref().submatrix(band, 0, m2, 2 * nr),
            y2.as_ref(),
            par,
        );
        uw[next]
            .as_mut()
            .submatrix_mut(0, nr2, m2, nr2)
            .copy_from(x2.as_ref());
        form_w(&mut uw[next], &mut wv[next], &npan, par);
        cur = next;
        pan = npan;
    }
}

/// `x = A y` (or `x += A y`) for the symmetric A whose lower triangle is `a` (its strict
/// upper triangle is never read): tril(a)·y + stril(a)ᵀ·y.
fn sym_lower_matmul(
    mut x: faer::MatMut<'_, f64>,
    accum: Accum,
    a: faer::MatRef<'_, f64>,
    y: faer::MatRef<'_, f64>,
    par: faer::Par,
) {
    tri_matmul(
        x.as_mut(),
        BlockStructure::Rectangular,
        accum,
        a,
        BlockStructure::TriangularLower,
        y,
        BlockStructure::Rectangular,
        1.0,
        par,
    );
    tri_matmul(
        x,
        BlockStructure::Rectangular,
        Accum::Add,
        a.transpose(),
        BlockStructure::StrictTriangularUpper,
        y,
        BlockStructure::Rectangular,
        1.0,
        par,
    );
}

/// QR of the column panel at `k` (rows below the band): the reflectors' `V` goes to the
/// left half of `uw`, the panel becomes R (upper triangular inside the band, zeros below).
fn panel_qr(a: &mut Mat<f64>, k: usize, band: usize, p: &mut [f64], uw: &mut Mat<f64>) -> Panel {
    let n = a.nrows();
    let m = n - k - band; // rows below the band in this panel
    let nb = band.min(n - k);
    let nr = nb.min(m - 1); // reflectors: a column with one row left needs none
                            // Panel QR, unblocked: P = A[k+band.., k..k+nb] (m × nb, column-major with leading
                            // dimension m), reflectors stored below its diagonal, τ in `taus`.
    let p = &mut p[..m * nb];
    for s in 0..nb {
        p[s * m..(s + 1) * m].copy_from_slice(&a.col_as_slice(k + s)[k + band..n]);
    }
    let mut taus = vec![0.0; nr];
    for s in 0..nr {
        let (head, tail) = p.split_at_mut((s + 1) * m);
        let col = &mut head[s * m + s..];
        let (tau, beta) = householder(col);
        taus[s] = tau;
        col[0] = 1.0;
        if tau != 0.0 {
            for c in 0..(nb - s - 1) {
                let other = &mut tail[c * m + s..(c + 1) * m];
                let w = tau * dot(col, other);
                for (o, v) in other.iter_mut().zip(col.iter()) {
                    *o -= w * v;
                }
            }
        }
        col[0] = beta;
    }
    // V (m × nr, unit lower trapezoidal) and T (nr × nr upper triangular): Q = I − V T Vᵀ.
    for s in 0..nr {
        let dst = &mut uw.col_as_slice_mut(s)[..m];
        dst[..s].fill(0.0);
        dst[s] = 1.0;
        dst[s + 1..].copy_from_slice(&p[s * m + s + 1..(s + 1) * m]);
    }
    let mut t = Mat::<f64>::zeros(nr, nr);
    for i in 0..nr {
        t[(i, i)] = taus[i];
        if taus[i] == 0.0 || i == 0 {
            continue;
        }
        // z = V[:, ..i]ᵀ v_i ; T[..i, i] = −τᵢ T[..i, ..i] z
        let vi = &uw.col_as_slice(i)[i..m];
        let z: Vec<f64> = (0..i).map(|j| dot(&uw.col_as_slice(j)[i..m], vi)).collect();
        for r in 0..i {
            let mut acc = 0.0;
            for c in r..i {
                acc += t[(r, c)] * z[c];
            }
            t[(r, i)] = -taus[i] * acc;
        }
    }
    // The panel becomes R (upper triangular) inside the band, zeros below. (The upper
    // triangle is never read: later panels and stage 2 only read the lower band and the
    // lower triangle of the trailing block.)
    for s in 0..nb {
        let dst = &mut a.col_as_slice_mut(k + s)[k + band..n];
        dst.fill(0.0);
        let top = (s + 1).min(m);
        dst[..top].copy_from_slice(&p[s * m..s * m + top]);
    }
    Panel {
        r0: k + band,
        m,
        nr,
        t,
    }
}

/// From X (right half of `uw`, beside V): W = X − ½ V (Tᵀ Vᵀ X) in place, and
/// `wv` = [W V] for the update A22 −= [V W] [W V]ᵀ.
fn form_w(uw: &mut Mat<f64>, wv: &mut Mat<f64>, pan: &Panel, par: faer::Par) {
    let (m, nr) = (pan.m, pan.nr);
    let (v, mut x) = uw
        .as_mut()
        .submatrix_mut(0, 0, m, 2 * nr)
        .split_at_col_mut(nr);
    let v = v.as_ref();
    let mut vtx = Mat::<f64>::zeros(nr, nr);
    matmul(
        vtx.as_mut(),
        Accum::Replace,
        v.transpose(),
        x.as_ref(),
        1.0,
        par,
    );
    let mut z = Mat::<f64>::zeros(nr, nr);
    matmul(
        z.as_mut(),
        Accum::Replace,
        pan.t.transpose(),
        vtx.as_ref(),
        1.0,
        par,
    );
    matmul(x.as_mut(), Accum::Add, v, z.as_ref(), -0.5, par);
    wv.as_mut().submatrix_mut(0, 0, m, nr).copy_from(x.as_ref());
    wv.as_mut().submatrix_mut(0, nr, m, nr).copy_from(v);
}

/// One pass over the lower triangle of the symmetric `a33` (m × m): each tile gets
/// `a33 −= uw wvᵀ` (lower triangle only), then its share of `a33 · y` (the updated
/// matrix as symmetric) while it is in cache. Tiles go to the threads as whole column
/// strips, a fixed partition, and the threads' partial products are summed in a fixed
/// order: the result does not depend on timing.
fn fused_update_product(
    a33: faer::MatMut<'_, f64>,
    uw: faer::MatRef<'_, f64>,
    wv: faer::MatRef<'_, f64>,
    y: faer::MatRef<'_, f64>,
    par: faer::Par,
) -> Mat<f64> {
    use rayon::prelude::*;
    let m = a33.nrows();
    let nr = y.ncols();
    // Column strips of TILE columns, and their work (rows at and below the diagonal).
    let mut strips = Vec::new();
    let mut rest = a33;
    let mut c0 = 0;
    while c0 < m {
        let w = TILE.min(m - c0);
        let (l, r) = rest.split_at_col_mut(w);
        strips.push((c0, l));
        rest = r;
        c0 += w;
    }
    let threads = match par {
        faer::Par::Seq => 1,
        faer::Par::Rayon(t) => t.get().min(strips.len()).max(1),
    };
    // Greedy: the largest strip first, each to the least loaded thread.
    // Per thread: (work, [(first column, strip)]).
    type Group<'a> = (usize, Vec<(usize, faer::MatMut<'a, f64>)>);
    let mut groups: Vec<Group<'_>> = (0..threads).map(|_| (0, Vec::new())).collect();
    for (c0, s) in strips {
        let g = (0..threads)
            .min_by_key(|&g| groups[g].0)
            .unwrap_or_default();
        groups[g].0 += (m - c0) * s.ncols();
        groups[g].1.push((c0, s));
    }
    let seq = faer::Par::Seq;
    let parts: Vec<Mat<f64>> = groups
        .into_par_iter()
        .map(|(_, strips)| {
            let mut x = Mat::<f64>::zeros(m, nr);
            for (c0, mut strip) in strips {
                let w = strip.ncols();
                let mut r = c0;
                while r < m {
                    let h = TILE.min(m - r);
                    let mut tile = strip.as_mut().submatrix_mut(r, 0, h, w);
                    if r == c0 {
                        // Diagonal tile: lower triangle only, read as symmetric.
                        tri_matmul(
                            tile.as_mut(),
                            BlockStructure::TriangularLower,
                            Accum::Add,
                            uw.submatrix(r, 0, h, uw.ncols()),
                            BlockStructure::Rectangular,
                            wv.submatrix(c0, 0, w, wv.ncols()).transpose(),
                            BlockStructure::Rectangular,
                            -1.0,
                            seq,
                        );
                        sym_lower_matmul(
                            x.as_mut().submatrix_mut(r, 0, h, nr),
                            Accum::Add,
                            tile.as_ref(),
                            y.submatrix(c0, 0, w, nr),
                            seq,
                        );
                    } else {
                        matmul(
                            tile.as_mut(),
                            Accum::Add,
                            uw.submatrix(r, 0, h, uw.ncols()),
                            wv.submatrix(c0, 0, w, wv.ncols()).transpose(),
                            -1.0,
                            seq,
                        );
                        matmul(
                            x.as_mut().submatrix_mut(r, 0, h, nr),
                            Accum::Add,
                            tile.as_ref(),
                            y.submatrix(c0, 0, w, nr),
                            1.0,
                            seq,
                        );
                        matmul(
                            x.as_mut().submatrix_mut(c0, 0, w, nr),
                            Accum::Add,
                            tile.as_ref().transpose(),
                            y.submatrix(r, 0, h, nr),
                            1.0,
                            seq,
                        );
                    }
                    r += h;
                }
            }
            x
        })
        .collect();
    let mut parts = parts.into_iter();
    let mut x = parts.next().unwrap_or_else(|| Mat::zeros(m, nr));
    for p in parts {
        x += p;
    }
    x
}

/// The lower band of a symmetric matrix, column by column: entry (i, j), i ≥ j, lives at
/// `data[j * width + (i − j)]` for i − j < width. `width = 2·band + 2` leaves room for the
/// bulges of stage 2.
struct BandStore {
    n: usize,
    band: usize,
    width: usize,
    data: Vec<f64>,
}

impl BandStore {
    fn from_dense(a: &Mat<f64>, band: usize) -> BandStore {
        let n = a.nrows();
        let width = 2 * band + 2;
        let mut data = vec![0.0; n * width];
        for j in 0..n {
            for i in j..n.min(j + band + 1) {
                data[band_index(width, i, j)] = a[(i, j)];
            }
        }
        BandStore {
            n,
            band,
            width,
            data,
        }
    }

    #[inline]
    fn idx(&self, i: usize, j: usize) -> usize {
        band_index(self.width, i, j)
    }

    /// Stage 2: reduce the band to tridiagonal form by bulge chasing, on one thread.
    fn chase_to_tridiagonal(&mut self) {
        let raw = self.raw();
        let mut bufs = SweepBufs::new(self.band);
        for st in 0..self.n.saturating_sub(2) {
            // SAFETY: one thread, and `raw` points into `self.data`, borrowed mutably here.
            unsafe { sweep(raw, st, &mut bufs, |_| {}, |_| {}) };
        }
    }

    /// Stage 2 on two threads: even sweeps on one, odd sweeps on the other, sweep s + 1
    /// running step k only once sweep s has finished step k + 1. Step k of sweep s
    /// touches only rows s + 1 + k·b ..= s + (k + 1)·b of the band, so the two threads
    /// never touch the same entry at once, and every entry sees the same updates in the
    /// same order as on one thread: the result is bit-identical to [`Self::chase_to_tridiagonal`].
    fn chase_to_tridiagonal_par(&mut self) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let sweeps = self.n.saturating_sub(2);
        if self.band < 2 || sweeps < 4 {
            return self.chase_to_tridiagonal();
        }
        let raw = self.raw();
        // Steps of each sweep completed so far (usize::MAX once the sweep has ended).
        let progress: Vec<AtomicUsize> = (0..sweeps).map(|_| AtomicUsize::new(0)).collect();
        let run = |parity: usize| {
            let mut bufs = SweepBufs::new(raw.band);
            for st in (parity..sweeps).step_by(2) {
                let wait = |k: usize| {
                    if st == 0 {
                        return;
                    }
                    let mut spins = 0u32;
                    while progress[st - 1].load(Ordering::Acquire) < k + 2 {
                        spins += 1;
                        if spins < 1 << 12 {
                            std::hint::spin_loop();
                        } else {
                            std::thread::yield_now();
                        }
                    }
                };
                let done = |k: usize| progress[st].store(k + 1, Ordering::Release);
                // SAFETY: see the method's comment — `wait` orders every step after the
                // steps of the previous sweep that touch the same rows.
                unsafe { sweep(raw, st, &mut bufs, wait, done) };
                progress[st].store(usize::MAX, Ordering::Release);
            }
        };
        std::thread::scope(|sc| {
            let other = sc.spawn(|| run(1));
            run(0);
            // A panic on the other thread is a bug; propagate it.
            if let Err(e) = other.join() {
                std::panic::resume_unwind(e);
            }
        });
    }

    fn raw(&mut self) -> RawBand {
        RawBand {
            ptr: self.data.as_mut_ptr(),
            len: self.data.len(),
            n: self.n,
            band: self.band,
            width: self.width,
        }
    }

    /// (diagonal, subdiagonal with a trailing 0).
    fn tridiagonal(&self) -> (Vec<f64>, Vec<f64>) {
        let n = self.n;
        let d = (0..n).map(|i| self.data[self.idx(i, i)]).collect();
        let e = (0..n)
            .map(|i| {
                if i + 1 < n {
                    self.data[self.idx(i + 1, i)]
                } else {
                    0.0
                }
            })
            .collect();
        (d, e)
    }
}

/// Where entry (i, j), i ≥ j, of a band store with columns of `width` lives.
#[inline]
fn band_index(width: usize, i: usize, j: usize) -> usize {
    debug_assert!(i >= j && i - j < width, "({i}, {j}) outside the band store");
    j * width + (i - j)
}

/// The band store's data as a raw pointer, so that two threads can chase bulges in
/// disjoint rows of it at once.
#[derive(Clone, Copy)]
struct RawBand {
    ptr: *mut f64,
    len: usize,
    n: usize,
    band: usize,
    width: usize,
}

// SAFETY: a `RawBand` is only dereferenced through `RawBand::slice`, whose callers
// guarantee that no two threads use overlapping ranges at once.
unsafe impl Send for RawBand {}
unsafe impl Sync for RawBand {}

impl RawBand {
    #[inline]
    fn idx(&self, i: usize, j: usize) -> usize {
        band_index(self.width, i, j)
    }

    /// `data[base..base + len]`.
    ///
    /// # Safety
    /// No other reference to that range may be used while the slice lives.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice<'a>(&self, base: usize, len: usize) -> &'a mut [f64] {
        assert!(base + len <= self.len, "band store range out of bounds");
        std::slice::from_raw_parts_mut(self.ptr.add(base), len)
    }
}

/// Per-thread buffers of a sweep.
struct SweepBufs {
    v: Vec<f64>,
    v2: Vec<f64>,
    w: Vec<f64>,
    s: Vec<f64>,
}

impl SweepBufs {
    fn new(band: usize) -> Self {
        SweepBufs {
            v: Vec::with_capacity(band),
            v2: Vec::with_capacity(band),
            w: Vec::with_capacity(band),
            s: vec![0.0; band],
        }
    }
}

/// Two-sided `D ← H D H` on the diagonal block rows/cols `r0..r0+len` (lower part).
///
/// # Safety
/// The caller has exclusive use of the rows `r0..r0 + v.len()` of the band.
unsafe fn two_sided(b: RawBand, r0: usize, v: &[f64], tau: f64, w: &mut Vec<f64>) {
    let len = v.len();
    w.clear();
    w.resize(len, 0.0);
    // w = τ D v (D symmetric, lower stored)
    for c in 0..len {
        let col = b.slice(b.idx(r0 + c, r0 + c), len - c);
        let vc = v[c];
        w[c] += col[0] * vc;
        let mut acc = 0.0;
        for (t, &d) in col.iter().enumerate().skip(1) {
            w[c + t] += d * vc;
            acc += d * v[c + t];
        }
        w[c] += acc;
    }
    let mut dot = 0.0;
    for i in 0..len {
        w[i] *= tau;
        dot += w[i] * v[i];
    }
    let alpha = -0.5 * tau * dot;
    for i in 0..len {
        w[i] += alpha * v[i];
    }
    // D −= v wᵀ + w vᵀ (lower part)
    for c in 0..len {
        let (vc, wc) = (v[c], w[c]);
        let col = b.slice(b.idx(r0 + c, r0 + c), len - c);
        for (t, d) in col.iter_mut().enumerate() {
            *d -= v[c + t] * wc + w[c + t] * vc;
        }
    }
}

/// Sweep `st` of stage 2: annihilate column `st` below its subdiagonal and chase the
/// bulge down the band. Step 0 works on rows `st+1 ..= st+b`, step k on rows
/// `st+1+k·b ..= st+(k+1)·b` (and columns of the block before). `wait(k)` is called
/// before step k, `done(k)` after it.
///
/// # Safety
/// While step k runs, no other thread may touch the rows of step k (`wait` must order it
/// after any step of another sweep that touches them).
unsafe fn sweep(
    b: RawBand,
    st: usize,
    bufs: &mut SweepBufs,
    wait: impl Fn(usize),
    done: impl Fn(usize),
) {
    let n = b.n;
    let bw = b.band;
    let SweepBufs { v, v2, w, s } = bufs;
    let mut r0 = st + 1;
    let mut r1 = (st + bw).min(n - 1);
    if r1 <= r0 {
        return;
    }
    wait(0);
    let base = b.idx(r0, st);
    let head = b.slice(base, r1 - r0 + 1);
    v.clear();
    v.extend_from_slice(head);
    let (mut tau, beta) = householder(v);
    if tau == 0.0 {
        return;
    }
    head[0] = beta;
    head[1..].fill(0.0);
    v[0] = 1.0;
    two_sided(b, r0, v, tau, w);
    done(0);
    let mut k = 1;
    loop {
        let i0 = r1 + 1;
        if i0 >= n {
            break;
        }
        wait(k);
        let i1 = (r1 + bw).min(n - 1);
        let rows = i1 - i0 + 1;
        let cols = r1 - r0 + 1;
        // Right-apply H (columns r0..=r1) to rows i0..=i1: O ← O (I − τ v vᵀ).
        s[..rows].fill(0.0);
        for (c, &vc) in v.iter().enumerate().take(cols) {
            let col = b.slice(b.idx(i0, r0 + c), rows);
            for (acc, &o) in s.iter_mut().zip(col.iter()) {
                *acc += o * vc;
            }
        }
        for (c, &vc) in v.iter().enumerate().take(cols) {
            let col = b.slice(b.idx(i0, r0 + c), rows);
            let f = tau * vc;
            for (o, &acc) in col.iter_mut().zip(s.iter()) {
                *o -= f * acc;
            }
        }
        // New reflector from the bulge's first column (column r0, rows i0..=i1).
        let first = b.slice(b.idx(i0, r0), rows);
        v2.clear();
        v2.extend_from_slice(first);
        let (tau2, beta2) = householder(v2);
        if tau2 == 0.0 {
            break;
        }
        first[0] = beta2;
        first[1..].fill(0.0);
        v2[0] = 1.0;
        // Left-apply H2 to the other columns of the block.
        for c in 1..cols {
            let col = b.slice(b.idx(i0, r0 + c), rows);
            let dot: f64 = col.iter().zip(v2.iter()).map(|(o, x)| o * x).sum();
            let f = tau2 * dot;
            for (o, x) in col.iter_mut().zip(v2.iter()) {
                *o -= f * x;
            }
        }
        two_sided(b, i0, v2, tau2, w);
        std::mem::swap(v, v2);
        tau = tau2;
        r0 = i0;
        r1 = i1;
        done(k);
        k += 1;
    }
}

/// Eigenvalues of the symmetric tridiagonal matrix (diagonal `d`, subdiagonal `e[i]`
/// between rows i and i+1, `e[n−1]` unused) by root-free implicit QL with Wilkinson
/// shifts (Pal–Walker–Kahan, LAPACK `dsterf`): it works on the squared off-diagonal, so a
/// step has no square root — the chain of dependent operations per step is two divisions
/// instead of a square root and two divisions. The eigenvalues replace `d`; `e` is
/// overwritten. Entries must be at most ~1e150 in magnitude (squares must not overflow);
/// [`two_stage`] scales to 1 first.
pub fn tridiagonal_eigenvalues(d: &mut [f64], e: &mut [f64]) -> Result<()> {
    let n = d.len();
    if n == 0 {
        return Ok(());
    }
    // An off-diagonal entry is negligible when it is small relative to its neighbours
    // (e² ≤ ε²·|dₘ dₘ₊₁|, high relative accuracy where possible) or below ε·‖T‖ — the
    // absolute accuracy of any backward-stable solver. Without the second test a cluster
    // of rounding-level eigenvalues (a rank-deficient covariance) next to O(‖T‖) ones
    // never converges.
    let norm = d.iter().fold(0.0f64, |m, x| m.max(x.abs()))
        + e[..n - 1].iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let eps2 = f64::EPSILON * f64::EPSILON;
    let floor2 = eps2 * norm * norm;
    // e now holds the squares.
    e[n - 1] = 0.0;
    for x in e.iter_mut() {
        *x *= *x;
    }
    let max_iter = 30 * n;
    let mut iter = 0;
    let mut l = 0;
    while l < n {
        // The first negligible e² at or after l.
        let mut m = l;
        while m + 1 < n {
            if e[m] <= eps2 * (d[m] * d[m + 1]).abs() || e[m] <= floor2 {
                break;
            }
            m += 1;
        }
        if m + 1 < n {
            e[m] = 0.0;
        }
        if m == l {
            l += 1; // d[l] is an eigenvalue
            continue;
        }
        if m == l + 1 {
            // A 2 × 2 block: its eigenvalues directly.
            let (r1, r2) = eig2(d[l], e[l].sqrt(), d[l + 1]);
            d[l] = r1;
            d[l + 1] = r2;
            e[l] = 0.0;
            l += 2;
            continue;
        }
        iter += 1;
        if iter > max_iter {
            bail!("tridiagonal QL did not converge ({n} × {n}, eigenvalue {l})");
        }
        // Wilkinson shift from the leading 2 × 2 block.
        let p = d[l];
        let rte = e[l].sqrt();
        let mut sigma = (d[l + 1] - p) / (2.0 * rte);
        let r = sigma.hypot(1.0);
        sigma = p - rte / (sigma + r.copysign(sigma));
        let (mut c, mut s) = (1.0f64, 0.0f64);
        let mut gamma = d[m] - sigma;
        let mut p = gamma * gamma;
        let mut i = m;
        while i > l {
            i -= 1;
            let bb = e[i];
            let r = p + bb;
            if i + 1 != m {
                e[i + 1] = s * r;
            }
            let oldc = c;
            c = p / r;
            s = bb / r;
            let oldgam = gamma;
            let alpha = d[i];
            gamma = c * (alpha - sigma) - s * oldgam;
            d[i + 1] = oldgam + (alpha - gamma);
            p = if c != 0.0 {
                gamma * gamma / c
            } else {
                oldc * bb
            };
        }
        e[l] = s * p;
        d[l] = sigma + gamma;
    }
    Ok(())
}

/// Eigenvalues of the symmetric 2 × 2 matrix [[a, b], [b, c]] (LAPACK `dlae2`): the one
/// of larger magnitude first, the other from the determinant (no cancellation).
fn eig2(a: f64, b: f64, c: f64) -> (f64, f64) {
    let sm = a + c;
    let adf = (a - c).abs();
    let ab = (b + b).abs();
    let (acmx, acmn) = if a.abs() > c.abs() { (a, c) } else { (c, a) };
    let rt = if adf > ab {
        adf * (1.0 + (ab / adf).powi(2)).sqrt()
    } else if adf < ab {
        ab * (1.0 + (adf / ab).powi(2)).sqrt()
    } else {
        ab * std::f64::consts::SQRT_2
    };
    if sm == 0.0 {
        return (0.5 * rt, -0.5 * rt);
    }
    let rt1 = if sm < 0.0 {
        0.5 * (sm - rt)
    } else {
        0.5 * (sm + rt)
    };
    (rt1, (acmx / rt1) * acmn - (b / rt1) * b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::rng::Rng;

    fn sorted(mut v: Vec<f64>) -> Vec<f64> {
        v.sort_by(f64::total_cmp);
        v
    }

    fn reference(a: &Mat<f64>) -> Vec<f64> {
        sorted(a.self_adjoint_eigenvalues(Side::Lower).unwrap())
    }

    fn uniform(rng: &mut Rng) -> f64 {
        rng.below(1 << 30) as f64 / (1u64 << 30) as f64 - 0.5
    }

    fn random_symmetric(n: usize, seed: u64) -> Mat<f64> {
        let mut rng = Rng::new(seed, 0);
        let g = Mat::<f64>::from_fn(n, n, |_, _| uniform(&mut rng));
        let mut a = Mat::<f64>::zeros(n, n);
        for i in 0..n {
            for j in 0..=i {
                let v = 0.5 * (g[(i, j)] + g[(j, i)]);
                a[(i, j)] = v;
                a[(j, i)] = v;
            }
        }
        a
    }

    fn assert_close(got: Vec<f64>, want: &[f64], scale: f64) {
        let got = sorted(got);
        assert_eq!(got.len(), want.len());
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-11 * scale,
                "eigenvalue {k}: two-stage {g} vs one-stage {w}"
            );
        }
    }

    #[test]
    fn equals_one_stage_for_many_sizes_and_bands() {
        for &(n, band) in &[
            (1, 4),
            (2, 4),
            (3, 1),
            (5, 2),
            (9, 4),
            (17, 4),
            (33, 8),
            (40, 3),
            (64, 16),
            (100, 7),
            (131, 32),
        ] {
            let a = random_symmetric(n, n as u64 * 31 + band as u64);
            let want = reference(&a);
            let scale = want.iter().fold(1.0f64, |m, x| m.max(x.abs()));
            assert_close(two_stage(a, band).unwrap(), &want, scale);
        }
    }

    /// The two-thread chase performs every entry's updates in the one-thread order: the
    /// band it leaves is bit-identical, over bands and sizes where sweeps end early, and
    /// on repeated runs (scheduling must not matter).
    #[test]
    fn two_thread_chase_is_bit_identical_to_one_thread() {
        for &(n, band) in &[(7, 2), (40, 3), (131, 8), (300, 16), (257, 32)] {
            let mut a = random_symmetric(n, n as u64 * 7 + band as u64);
            for j in 0..n {
                for i in 0..j {
                    a[(i, j)] = a[(j, i)];
                }
            }
            dense_to_band(&mut a, band);
            let mut one = BandStore::from_dense(&a, band);
            one.chase_to_tridiagonal();
            for _ in 0..5 {
                let mut two = BandStore::from_dense(&a, band);
                two.chase_to_tridiagonal_par();
                assert!(
                    one.data
                        .iter()
                        .zip(&two.data)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "n = {n}, band = {band}: the two-thread chase differs"
                );
            }
        }
    }

    #[test]
    fn only_the_lower_triangle_is_read() {
        let a = random_symmetric(70, 5);
        let want = reference(&a);
        let mut junk = a.clone();
        for j in 0..70 {
            for i in 0..j {
                junk[(i, j)] = 1e9;
            }
        }
        let scale = want.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        assert_close(two_stage(junk, 8).unwrap(), &want, scale);
    }

    #[test]
    fn covariance_like_matrices_with_repeated_and_zero_eigenvalues() {
        // Low rank PSD plus an identity block: eigenvalue 0 with multiplicity, 1 repeated.
        let n = 300;
        let mut rng = Rng::new(9, 0);
        let x = Mat::<f64>::from_fn(20, n, |_, _| uniform(&mut rng));
        let mut a = x.transpose() * &x;
        for i in 0..50 {
            a[(i, i)] += 1.0;
        }
        let want = reference(&a);
        let scale = want.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        assert_close(sym_eigenvalues(a.clone()).unwrap(), &want, scale);
        assert_close(two_stage(a, 32).unwrap(), &want, scale);
        // Diagonal and already tridiagonal inputs.
        let d = Mat::<f64>::from_fn(280, 280, |i, j| if i == j { i as f64 } else { 0.0 });
        let want = reference(&d);
        assert_close(sym_eigenvalues(d).unwrap(), &want, 280.0);
        let t = Mat::<f64>::from_fn(260, 260, |i, j| match i.abs_diff(j) {
            0 => 2.0,
            1 => -1.0,
            _ => 0.0,
        });
        let want = reference(&t);
        assert_close(sym_eigenvalues(t).unwrap(), &want, 4.0);
    }

    #[test]
    fn rank_deficient_product_like_fid_converges() {
        // M = S^½ C S^½ with S, C covariances of N < d samples: hundreds of
        // rounding-level eigenvalues next to O(1) ones (a case that once stalled QL).
        let (d, n1, n2) = (300, 170, 120);
        let mut rng = Rng::new(3, 1);
        let x = Mat::<f64>::from_fn(n1, d, |_, _| uniform(&mut rng));
        let y = Mat::<f64>::from_fn(n2, d, |_, _| uniform(&mut rng));
        let s = x.transpose() * &x;
        let c = y.transpose() * &y;
        let evd = s.self_adjoint_eigen(Side::Lower).unwrap();
        let lam = evd.S().column_vector();
        let half = Mat::<f64>::from_fn(
            d,
            d,
            |i, j| {
                if i == j {
                    lam[i].max(0.0).sqrt()
                } else {
                    0.0
                }
            },
        );
        let root = evd.U() * &half * evd.U().transpose();
        let m = &root * &c * &root;
        let m = Mat::<f64>::from_fn(d, d, |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));
        let want = reference(&m);
        let scale = want.iter().fold(1.0f64, |a, x| a.max(x.abs()));
        assert_close(two_stage(m.clone(), 8).unwrap(), &want, scale);
        assert_close(sym_eigenvalues(m).unwrap(), &want, scale);
    }

    #[test]
    fn non_finite_input_is_an_error() {
        let mut a = random_symmetric(10, 1);
        a[(7, 3)] = f64::NAN;
        let e = two_stage(a, 4).unwrap_err().to_string();
        assert!(e.contains("(7, 3)"), "{e}");
    }
}
