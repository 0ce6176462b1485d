//! Feature and statistics files.
//!
//! - Features: `.npy`, a 2-D array N × d of float32 or float64 (`<f4`/`<f8`, also
//!   big-endian), C or Fortran order, format v1/v2/v3 headers — read with `ndarray-npy`,
//!   converted to f64.
//! - Statistics: `.npz` with arrays `mu` (d) and `sigma` (d × d) — pytorch-fid's
//!   `np.savez` and clean-fid's `np.savez_compressed` files (zip entries stored or deflated).
//!   Written as float64, stored (uncompressed) by default, atomically.
//!
//! Files are told apart by their first bytes (`\x93NUMPY` vs a zip header), not their name.
//! Every error names the file.

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use faer::{Col, Mat, MatRef};
use ndarray::{Array1, Array2};
use ndarray_npy::{NpzReader, NpzWriter, ReadNpyError, ReadNpyExt, ReadNpzError, WriteNpyExt};

use crate::metrics::Stats;
use crate::sink::store::LocalStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dtype {
    F32,
    F64,
}

impl Dtype {
    /// Bytes per value.
    pub fn width(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
}

/// A feature matrix read from a file (rows = samples).
#[derive(Debug)]
pub struct Features {
    pub x: Mat<f64>,
    pub dtype: Dtype,
    pub path: PathBuf,
}

impl Features {
    /// The name used in messages.
    pub fn what(&self) -> String {
        self.path.display().to_string()
    }
}

/// What a path holds, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Npy,
    Npz,
    Directory,
}

pub fn sniff(path: &Path) -> Result<FileKind> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        return Ok(FileKind::Directory);
    }
    let mut magic = [0u8; 6];
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let n = read_up_to(&mut f, &mut magic)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if n >= 6 && &magic == b"\x93NUMPY" {
        Ok(FileKind::Npy)
    } else if n >= 4 && &magic[..4] == b"PK\x03\x04" {
        Ok(FileKind::Npz)
    } else if n == 0 {
        bail!(
            "{}: the file is empty (expected a .npy feature file or a .npz statistics file)",
            path.display()
        )
    } else {
        bail!(
            "{}: neither a .npy file (\\x93NUMPY header) nor a .npz archive (zip)",
            path.display()
        )
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn npy_error(path: &Path, e: ReadNpyError) -> anyhow::Error {
    let p = path.display();
    match e {
        ReadNpyError::WrongNdim(_, got) => anyhow::anyhow!(
            "{p}: expected a 2-D feature array (N samples × d dimensions), found a {got}-D array"
        ),
        ReadNpyError::WrongDescriptor(d) => {
            anyhow::anyhow!("{p}: unsupported dtype {d} (features must be float32 or float64)")
        }
        other => anyhow::anyhow!("{p}: not a readable .npy file: {other}"),
    }
}

/// Read an N × d float32/float64 `.npy` feature file as f64.
pub fn read_features(path: &Path) -> Result<Features> {
    match sniff(path)? {
        FileKind::Npy => {}
        FileKind::Directory => bail!(
            "{}: is a directory; to compute features from its images pass --model NAME (a feature model, e.g. inception), or pass a .npy feature file",
            path.display()
        ),
        FileKind::Npz => bail!(
            "{}: is a .npz archive (statistics?); this needs a .npy feature file (N × d)",
            path.display()
        ),
    }
    if let Some((x, dtype)) = read_npy_bulk(path)? {
        return Ok(Features {
            x,
            dtype,
            path: path.to_path_buf(),
        });
    }
    let open = || File::open(path).with_context(|| format!("cannot open {}", path.display()));
    let (x, dtype) = match Array2::<f64>::read_npy(open()?) {
        Ok(a) => (to_mat(&a), Dtype::F64),
        Err(ReadNpyError::WrongDescriptor(_)) => {
            let a = Array2::<f32>::read_npy(open()?).map_err(|e| npy_error(path, e))?;
            (to_mat(&a), Dtype::F32)
        }
        Err(e) => return Err(npy_error(path, e)),
    };
    Ok(Features {
        x,
        dtype,
        path: path.to_path_buf(),
    })
}

/// The common case read in bulk: a little-endian `<f4`/`<f8`, C-order, 2-D `.npy` whose
/// data is read once and converted to a column-major f64 matrix in parallel column
/// blocks. `None` for anything else (big-endian, Fortran order, other shapes or dtypes,
/// truncated data): the general `ndarray-npy` reader then handles it and its errors.
fn read_npy_bulk(path: &Path) -> Result<Option<(Mat<f64>, Dtype)>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let Some((dtype, n, d, off)) = parse_npy_header(&bytes) else {
        return Ok(None);
    };
    let width = dtype.width();
    let Some(len) = n.checked_mul(d).and_then(|e| e.checked_mul(width)) else {
        return Ok(None);
    };
    if bytes.len() - off != len {
        return Ok(None);
    }
    let mut m = Mat::<f64>::zeros(n, d);
    fill_from_le_rows(&bytes[off..], dtype, m.as_mut());
    Ok(Some((m, dtype)))
}

/// Statistics of an N × d feature `.npy` streamed from disk in row blocks (two passes,
/// memory O(block × d) — a 50k × 2048 file is never held as a whole), for the common
/// layout (little-endian `<f4`/`<f8`, C order). `None` for anything else; the caller then
/// reads the file whole, whose reader reports the file's problems.
pub fn stats_from_npy_streamed(path: &Path) -> Result<Option<Stats>> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let file_len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut head = vec![0u8; 12];
    if f.read_exact(&mut head).is_err() {
        return Ok(None);
    }
    let Some((hlen, start)) = npy_header_len(&head) else {
        return Ok(None);
    };
    let hlen = start + hlen;
    if hlen > 1 << 20 || hlen as u64 > file_len {
        return Ok(None);
    }
    head.resize(hlen, 0);
    if f.read_exact(&mut head[12..]).is_err() {
        return Ok(None);
    }
    let Some((dtype, n, d, off)) = parse_npy_header(&head) else {
        return Ok(None);
    };
    let width = dtype.width();
    let row_bytes = d * width;
    if n.checked_mul(row_bytes).map(|b| (off + b) as u64) != Some(file_len) {
        return Ok(None);
    }
    let what = path.display().to_string();
    let mut bytes = Vec::new();
    let stats = Stats::from_row_blocks(n, d, &what, |start, block| {
        let len = block.nrows();
        bytes.resize(len * row_bytes, 0);
        f.seek(SeekFrom::Start((off + start * row_bytes) as u64))
            .and_then(|_| f.read_exact(&mut bytes))
            .with_context(|| format!("cannot read {what}"))?;
        fill_from_le_rows(&bytes, dtype, block);
        Ok(())
    })?;
    Ok(Some(stats))
}

/// Fill the column-major `m` (rows × d) from C-order little-endian `dtype` rows in `data`
/// (exactly rows × d values), in parallel column blocks.
fn fill_from_le_rows(data: &[u8], dtype: Dtype, m: faer::MatMut<'_, f64>) {
    const BLOCK: usize = 32;
    use rayon::prelude::*;
    let (n, d) = (m.nrows(), m.ncols());
    let width = dtype.width();
    m.par_col_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(b, mut cols)| {
            let j0 = b * BLOCK;
            for i in 0..n {
                let row = (i * d + j0) * width;
                for jj in 0..cols.ncols() {
                    let at = row + jj * width;
                    cols[(i, jj)] = match dtype {
                        Dtype::F32 => {
                            f32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as f64
                        }
                        Dtype::F64 => f64::from_le_bytes(data[at..at + 8].try_into().unwrap()),
                    };
                }
            }
        });
}

/// `(header text length, where the text starts)` from an `.npy` file's first bytes (the
/// magic and version, then a u16 length for version 1 or a u32 for versions 2 and 3).
fn npy_header_len(b: &[u8]) -> Option<(usize, usize)> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return None;
    }
    match b[6] {
        1 => Some((u16::from_le_bytes([b[8], b[9]]) as usize, 10)),
        2 | 3 if b.len() >= 12 => {
            Some((u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12))
        }
        _ => None,
    }
}

/// `(dtype, rows, cols, data offset)` of a little-endian float, C-order, 2-D `.npy` header.
fn parse_npy_header(b: &[u8]) -> Option<(Dtype, usize, usize, usize)> {
    let (hlen, start) = npy_header_len(b)?;
    let header = std::str::from_utf8(b.get(start..start + hlen)?).ok()?;
    let h: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    let dtype = if h.contains("'descr':'<f4'") {
        Dtype::F32
    } else if h.contains("'descr':'<f8'") {
        Dtype::F64
    } else {
        return None;
    };
    if !h.contains("'fortran_order':False") {
        return None;
    }
    let shape = h.split("'shape':(").nth(1)?.split(')').next()?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    match dims[..] {
        [n, d] => Some((dtype, n, d, start + hlen)),
        _ => None,
    }
}

fn to_mat<T: Copy + Into<f64>>(a: &Array2<T>) -> Mat<f64> {
    let (n, d) = a.dim();
    let mut m = Mat::<f64>::zeros(n, d);
    for (i, row) in a.outer_iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            m[(i, j)] = v.into();
        }
    }
    m
}

/// Bytes of an `.npy` file holding `x` (C order) as `dtype`.
pub fn npy_bytes(x: &Mat<f64>, dtype: Dtype) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    match dtype {
        Dtype::F64 => {
            Array2::from_shape_fn((x.nrows(), x.ncols()), |(i, j)| x[(i, j)]).write_npy(&mut buf)?
        }
        Dtype::F32 => Array2::from_shape_fn((x.nrows(), x.ncols()), |(i, j)| x[(i, j)] as f32)
            .write_npy(&mut buf)?,
    }
    Ok(buf)
}

/// Write `x` as an `.npy` file, atomically.
pub fn write_features(path: &Path, x: &Mat<f64>, dtype: Dtype) -> Result<()> {
    write_atomic(path, &npy_bytes(x, dtype)?)
}

/// Write `bytes` to `path` through a temporary file and a rename (`LocalStore`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if super::objstore::is_url_path(path) {
        bail!(
            "{}: this command writes local files only (object-store URLs are taken by --out of build, fetch and eval features/stats/text); write locally and copy it with your cloud's CLI",
            path.display()
        );
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: not a file name", path.display()))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let store = LocalStore::new(&dir);
    store.clear_stale_temps(name);
    store.put_atomic(name, bytes)
}

fn npz_error(path: &Path, array: &str, e: ReadNpzError) -> anyhow::Error {
    let p = path.display();
    match e {
        ReadNpzError::Npy(ReadNpyError::WrongNdim(_, got)) => {
            anyhow::anyhow!("{p}: array `{array}` is {got}-D (`mu` must be 1-D, `sigma` 2-D)")
        }
        ReadNpzError::Npy(ReadNpyError::WrongDescriptor(d)) => {
            anyhow::anyhow!("{p}: array `{array}` has dtype {d} (must be float32 or float64)")
        }
        other => anyhow::anyhow!("{p}: cannot read array `{array}`: {other}"),
    }
}

fn npz_array<D: ndarray::Dimension>(
    reader: &mut NpzReader<std::io::BufReader<File>>,
    path: &Path,
    name: &str,
) -> Result<ndarray::Array<f64, D>> {
    match reader.by_name::<ndarray::OwnedRepr<f64>, D>(name) {
        Ok(a) => Ok(a),
        Err(ReadNpzError::Npy(ReadNpyError::WrongDescriptor(_))) => {
            let a = reader
                .by_name::<ndarray::OwnedRepr<f32>, D>(name)
                .map_err(|e| npz_error(path, name, e))?;
            Ok(a.mapv(f64::from))
        }
        Err(e) => Err(npz_error(path, name, e)),
    }
}

/// Read `mu` and `sigma` from a `.npz` (checked: shapes agree, values finite).
pub fn read_stats_npz(path: &Path) -> Result<Stats> {
    // Streamed from the file (not read whole first): one fewer copy of a d × d matrix.
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = NpzReader::new(std::io::BufReader::with_capacity(1 << 20, file))
        .map_err(|e| anyhow::anyhow!("{}: not a readable .npz archive: {e}", path.display()))?;
    let names = reader
        .names()
        .map_err(|e| anyhow::anyhow!("{}: not a readable .npz archive: {e}", path.display()))?;
    for want in ["mu", "sigma"] {
        if !names
            .iter()
            .any(|n| n == want || n == &format!("{want}.npy"))
        {
            bail!(
                "{}: the .npz has no array `{want}` (statistics files need `mu` and `sigma`; it has: {})",
                path.display(),
                names.join(", ")
            );
        }
    }
    let mu: Array1<f64> = npz_array(&mut reader, path, "mu")?;
    if let Some(sigma) = read_npz_square_f64(path, "sigma")? {
        let stats = Stats {
            mu: Col::from_fn(mu.len(), |i| mu[i]),
            sigma,
            n: None,
        };
        stats.check(&path.display().to_string())?;
        return Ok(stats);
    }
    let sigma: Array2<f64> = npz_array(&mut reader, path, "sigma")?;
    let (r, c) = sigma.dim();
    let stats = Stats {
        mu: Col::from_fn(mu.len(), |i| mu[i]),
        sigma: match sigma.as_slice() {
            // C order (what NumPy writes), taken as the column-major Σᵀ: a straight copy
            // instead of a transposing one. A covariance is symmetric, and the FID route
            // reads one triangle of Σ₁ and forms one triangle of Lᵀ Σ₂ L anyway, so which
            // triangle is stored first does not matter (np.cov's Σ is exactly symmetric).
            Some(s) if r == c => MatRef::from_column_major_slice(s, c, r).to_owned(),
            Some(s) => MatRef::from_row_major_slice(s, r, c).to_owned(),
            None => Mat::from_fn(r, c, |i, j| sigma[[i, j]]),
        },
        n: None,
    };
    stats.check(&path.display().to_string())?;
    Ok(stats)
}

/// The common case of a `.npz` covariance read straight into its matrix: a square
/// little-endian `<f8`, C-order array (what NumPy writes), streamed a row at a time from
/// the archive (stored or deflated) into the column-major matrix as Σᵀ — one d × d
/// allocation instead of two and no whole-array copy (fresh memory is slow to fault in;
/// a covariance is symmetric, see [`read_stats_npz`]). `None` for anything else, or a
/// short entry: the general reader then handles it and reports its problems.
fn read_npz_square_f64(path: &Path, name: &str) -> Result<Option<Mat<f64>>> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let Ok(mut zip) = zip::ZipArchive::new(std::io::BufReader::with_capacity(1 << 20, file)) else {
        return Ok(None);
    };
    let npy = format!("{name}.npy");
    let entry = if zip.index_for_name(&npy).is_some() {
        npy
    } else {
        name.to_string()
    };
    let Ok(mut f) = zip.by_name(&entry) else {
        return Ok(None);
    };
    let mut head = vec![0u8; 12];
    if f.read_exact(&mut head).is_err() {
        return Ok(None);
    }
    let Some((hlen, start)) = npy_header_len(&head) else {
        return Ok(None);
    };
    if start + hlen > 1 << 20 {
        return Ok(None);
    }
    head.resize(start + hlen, 0);
    if f.read_exact(&mut head[12..]).is_err() {
        return Ok(None);
    }
    let Some((Dtype::F64, r, c, _)) = parse_npy_header(&head) else {
        return Ok(None);
    };
    if r != c || r == 0 || f.size() != (head.len() + r * c * 8) as u64 {
        return Ok(None);
    }
    let mut m = Mat::<f64>::zeros(c, r);
    let mut row = vec![0u8; c * 8];
    for i in 0..r {
        if f.read_exact(&mut row).is_err() {
            return Ok(None);
        }
        for (dst, b) in m.col_as_slice_mut(i).iter_mut().zip(row.chunks_exact(8)) {
            *dst = f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        }
    }
    Ok(Some(m))
}

/// Statistics from a path that is either a `.npz` (read) or a `.npy` of features (computed).
pub fn load_stats(path: &Path) -> Result<Stats> {
    match sniff(path)? {
        FileKind::Npz => read_stats_npz(path),
        FileKind::Npy => {
            if let Some(s) = stats_from_npy_streamed(path)? {
                return Ok(s);
            }
            let f = read_features(path)?;
            Stats::from_features(f.x.as_ref(), &f.what())
        }
        FileKind::Directory => bail!(
            "{}: is a directory; to compute features from its images pass --model NAME (a feature model, e.g. inception), or pass .npz statistics or a .npy feature file",
            path.display()
        ),
    }
}

/// Write `mu`/`sigma` as float64 to a `.npz` (zip stored, or deflated if `compressed`),
/// atomically.
pub fn write_stats_npz(path: &Path, stats: &Stats, compressed: bool) -> Result<()> {
    write_atomic(path, &stats_npz_bytes(path, stats, compressed)?)
}

/// The bytes of an `.npz` with `mu` and `sigma` (`path` for messages).
pub fn stats_npz_bytes(path: &Path, stats: &Stats, compressed: bool) -> Result<Vec<u8>> {
    let d = stats.dim();
    let mu = Array1::from_shape_fn(d, |i| stats.mu[i]);
    let sigma = Array2::from_shape_fn((d, d), |(i, j)| stats.sigma[(i, j)]);
    let cursor = Cursor::new(Vec::new());
    let mut w = if compressed {
        NpzWriter::new_compressed(cursor)
    } else {
        NpzWriter::new(cursor)
    };
    w.add_array("mu", &mu)
        .and_then(|_| w.add_array("sigma", &sigma))
        .with_context(|| format!("cannot encode {}", path.display()))?;
    let bytes = w
        .finish()
        .with_context(|| format!("cannot encode {}", path.display()))?
        .into_inner();
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_roundtrip_f32_f64() {
        let dir = tempfile::tempdir().unwrap();
        let x = Mat::from_fn(3, 2, |i, j| i as f64 + 0.25 * j as f64);
        for dt in [Dtype::F32, Dtype::F64] {
            let p = dir.path().join(format!("{dt:?}.npy"));
            write_features(&p, &x, dt).unwrap();
            let f = read_features(&p).unwrap();
            assert_eq!(f.dtype, dt);
            assert_eq!(f.x, x);
        }
    }

    #[test]
    fn bulk_reader_equals_general_reader() {
        // 70 columns: several parallel column blocks and a ragged last one.
        let dir = tempfile::tempdir().unwrap();
        let x = Mat::from_fn(9, 70, |i, j| (i * 70 + j) as f64 * 0.5 - 3.0);
        for dt in [Dtype::F32, Dtype::F64] {
            let p = dir.path().join(format!("{dt:?}.npy"));
            write_features(&p, &x, dt).unwrap();
            let (bulk, got_dt) = read_npy_bulk(&p).unwrap().expect("bulk path taken");
            assert_eq!(got_dt, dt);
            assert_eq!(bulk, x);
            // Truncated data: not the bulk path; the general reader reports the error.
            let bytes = std::fs::read(&p).unwrap();
            let t = dir.path().join(format!("t{dt:?}.npy"));
            std::fs::write(&t, &bytes[..bytes.len() - 3]).unwrap();
            assert!(read_npy_bulk(&t).unwrap().is_none());
            assert!(read_features(&t).is_err());
        }
    }

    #[test]
    fn npz_roundtrip_stored_and_deflated() {
        let dir = tempfile::tempdir().unwrap();
        let x = Mat::from_fn(5, 3, |i, j| ((i * 3 + j * 7) % 5) as f64);
        let s = Stats::from_features(x.as_ref(), "x").unwrap();
        for c in [false, true] {
            let p = dir.path().join(format!("s{c}.npz"));
            write_stats_npz(&p, &s, c).unwrap();
            let r = load_stats(&p).unwrap();
            assert_eq!(r.mu, s.mu);
            assert_eq!(r.sigma, s.sigma);
        }
    }

    #[test]
    fn bad_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.npy");
        std::fs::write(&p, b"hello world").unwrap();
        let e = format!("{:#}", read_features(&p).unwrap_err());
        assert!(e.contains("junk.npy"), "{e}");
        let p = dir.path().join("trunc.npy");
        let mut b = npy_bytes(&Mat::from_fn(4, 4, |_, _| 1.0), Dtype::F64).unwrap();
        b.truncate(b.len() - 8);
        std::fs::write(&p, b).unwrap();
        let e = format!("{:#}", read_features(&p).unwrap_err());
        assert!(e.contains("trunc.npy"), "{e}");
        // An npz without `sigma`.
        let p = dir.path().join("nosigma.npz");
        let mut w = NpzWriter::new(Cursor::new(Vec::new()));
        w.add_array("mu", &Array1::<f64>::zeros(3)).unwrap();
        std::fs::write(&p, w.finish().unwrap().into_inner()).unwrap();
        let e = format!("{:#}", load_stats(&p).unwrap_err());
        assert!(e.contains("nosigma.npz") && e.contains("sigma"), "{e}");
        // 1-D features.
        let p = dir.path().join("oned.npy");
        let mut buf = Vec::new();
        Array1::<f64>::zeros(3).write_npy(&mut buf).unwrap();
        std::fs::write(&p, buf).unwrap();
        let e = format!("{:#}", read_features(&p).unwrap_err());
        assert!(e.contains("oned.npy") && e.contains("1-D"), "{e}");
    }
}
