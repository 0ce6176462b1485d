//! `history.parquet`: one row per night × checkpoint × metric.
//!
//! Recording a night reads the whole file (it is small: nights × checkpoints × metrics
//! rows), drops that night's rows, appends the new ones, sorts by (night, checkpoint,
//! metric) and rewrites the file atomically (temp + rename). So re-running a night
//! replaces its rows and never duplicates them, and a crash leaves the old file intact.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt64Type};
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde::Serialize;

use crate::eval::io::write_atomic;

/// One measured value. Provenance columns repeat per row so any row stands alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryRow {
    /// `YYYY-MM-DD` (UTC).
    pub night: String,
    pub study: String,
    pub checkpoint: String,
    pub condition: String,
    /// Training-sample count N.
    pub samples: u64,
    pub step: Option<u64>,
    /// `fid`, `fid_inf`, `kid`, `cmmd`, `precision`, `recall`, `density`, `coverage`, `clip_score`.
    pub metric: String,
    pub value: f64,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Generated images scored (fixed per study).
    pub n_eval: u64,
    pub n_reference: Option<u64>,
    /// sha256 of the dataset/subset manifest the checkpoint was trained on.
    pub dataset_manifest_sha256: Option<String>,
    /// `name=sha256` pairs, `;`-separated, sorted: feature model, checkpoint files.
    pub model_sha256: String,
    pub prep_version: String,
    /// sha256 of the config file's bytes.
    pub config_sha256: String,
    /// Generated images (directory or Parquet) for the report's sample grid.
    pub images: Option<String>,
    /// Real validation images and this condition's maps (matched by file stem).
    pub real_images: Option<String>,
    pub condition_images: Option<String>,
}

fn schema() -> SchemaRef {
    let s = |n: &str, null| Field::new(n, DataType::Utf8, null);
    let u = |n: &str, null| Field::new(n, DataType::UInt64, null);
    let f = |n: &str, null| Field::new(n, DataType::Float64, null);
    Arc::new(Schema::new(vec![
        s("night", false),
        s("study", false),
        s("checkpoint", false),
        s("condition", false),
        u("samples", false),
        u("step", true),
        s("metric", false),
        f("value", false),
        f("ci_low", true),
        f("ci_high", true),
        u("n_eval", false),
        u("n_reference", true),
        s("dataset_manifest_sha256", true),
        s("model_sha256", false),
        s("prep_version", false),
        s("config_sha256", false),
        s("images", true),
        s("real_images", true),
        s("condition_images", true),
    ]))
}

/// Check a night id: `YYYY-MM-DD` with a valid month and day.
pub fn check_night(night: &str) -> Result<()> {
    let b = night.as_bytes();
    let ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && night
            .chars()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && (1..=12).contains(&night[5..7].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&night[8..10].parse::<u32>().unwrap_or(0));
    if !ok {
        bail!("--night {night:?}: expected a date YYYY-MM-DD, e.g. 2026-11-26");
    }
    Ok(())
}

/// Today's date in UTC as `YYYY-MM-DD`.
pub fn today_utc() -> String {
    let now = std::time::SystemTime::now();
    humantime::format_rfc3339_seconds(now).to_string()[..10].to_string()
}

fn batch(rows: &[HistoryRow]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&HistoryRow) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let so = |f: &dyn Fn(&HistoryRow) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let cols: Vec<ArrayRef> = vec![
        s(&|r| &r.night),
        s(&|r| &r.study),
        s(&|r| &r.checkpoint),
        s(&|r| &r.condition),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.samples),
        )),
        Arc::new(rows.iter().map(|r| r.step).collect::<UInt64Array>()),
        s(&|r| &r.metric),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.value))),
        Arc::new(rows.iter().map(|r| r.ci_low).collect::<Float64Array>()),
        Arc::new(rows.iter().map(|r| r.ci_high).collect::<Float64Array>()),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.n_eval))),
        Arc::new(rows.iter().map(|r| r.n_reference).collect::<UInt64Array>()),
        so(&|r| r.dataset_manifest_sha256.as_deref()),
        s(&|r| &r.model_sha256),
        s(&|r| &r.prep_version),
        s(&|r| &r.config_sha256),
        so(&|r| r.images.as_deref()),
        so(&|r| r.real_images.as_deref()),
        so(&|r| r.condition_images.as_deref()),
    ];
    Ok(RecordBatch::try_new(schema(), cols)?)
}

/// Every row of a history file (an absent file is an empty history).
pub fn read(path: &Path) -> Result<Vec<HistoryRow>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?
        .build()?;
    let want = schema();
    let mut out = Vec::new();
    for b in reader {
        let b = b.with_context(|| format!("{}: cannot read", path.display()))?;
        for field in want.fields() {
            match b.column_by_name(field.name()) {
                Some(c) if c.data_type() == field.data_type() => {}
                _ => bail!(
                    "{}: not a prep history file (column {:?} missing or not {}); pass the `history` file that `prep eval run` writes",
                    path.display(),
                    field.name(),
                    field.data_type()
                ),
            }
        }
        let col = |n: &str| b.column_by_name(n).expect("checked above");
        let st = |n: &str| col(n).as_string::<i32>().clone();
        let u = |n: &str| col(n).as_primitive::<UInt64Type>().clone();
        let fl = |n: &str| col(n).as_primitive::<Float64Type>().clone();
        let (night, study, ck, cond, metric) = (
            st("night"),
            st("study"),
            st("checkpoint"),
            st("condition"),
            st("metric"),
        );
        let (dm, ms, pv, ch, im) = (
            st("dataset_manifest_sha256"),
            st("model_sha256"),
            st("prep_version"),
            st("config_sha256"),
            st("images"),
        );
        let (ri, ci) = (st("real_images"), st("condition_images"));
        let (samples, step, n_eval, n_ref) =
            (u("samples"), u("step"), u("n_eval"), u("n_reference"));
        let (value, lo, hi) = (fl("value"), fl("ci_low"), fl("ci_high"));
        let os = |a: &StringArray, i| (!a.is_null(i)).then(|| a.value(i).to_string());
        let ou = |a: &UInt64Array, i| (!a.is_null(i)).then(|| a.value(i));
        let of = |a: &Float64Array, i| (!a.is_null(i)).then(|| a.value(i));
        for i in 0..b.num_rows() {
            out.push(HistoryRow {
                night: night.value(i).to_string(),
                study: study.value(i).to_string(),
                checkpoint: ck.value(i).to_string(),
                condition: cond.value(i).to_string(),
                samples: samples.value(i),
                step: ou(&step, i),
                metric: metric.value(i).to_string(),
                value: value.value(i),
                ci_low: of(&lo, i),
                ci_high: of(&hi, i),
                n_eval: n_eval.value(i),
                n_reference: ou(&n_ref, i),
                dataset_manifest_sha256: os(&dm, i),
                model_sha256: ms.value(i).to_string(),
                prep_version: pv.value(i).to_string(),
                config_sha256: ch.value(i).to_string(),
                images: os(&im, i),
                real_images: os(&ri, i),
                condition_images: os(&ci, i),
            });
        }
    }
    Ok(out)
}

fn sort(rows: &mut [HistoryRow]) {
    rows.sort_by(|a, b| {
        (&a.night, &a.study, &a.checkpoint, &a.metric).cmp(&(
            &b.night,
            &b.study,
            &b.checkpoint,
            &b.metric,
        ))
    });
}

/// Replace the rows of (`night`, `study`) in `path` by `new` (atomic rewrite). Returns the
/// number of rows in the file afterwards.
pub fn record(path: &Path, night: &str, study: &str, new: &[HistoryRow]) -> Result<usize> {
    check_night(night)?;
    if let Some(r) = new.iter().find(|r| r.night != night || r.study != study) {
        bail!(
            "internal: row for night {} / study {} recorded as night {night} / study {study}",
            r.night,
            r.study
        );
    }
    let mut rows = read(path)?;
    rows.retain(|r| !(r.night == night && r.study == study));
    rows.extend_from_slice(new);
    sort(&mut rows);
    write(path, &rows)?;
    Ok(rows.len())
}

/// [`record`] on a local path or an object-store URL. On a store the history object is
/// read with its version, the night recorded into a temporary copy, and the result put
/// back as one whole object conditional on that version (created only if still absent):
/// if another run wrote the history in between, nothing is overwritten and the error says
/// to re-run (re-running a night replaces its rows, never duplicates them).
pub fn record_anywhere(
    path: &Path,
    night: &str,
    study: &str,
    new: &[HistoryRow],
    opts: &crate::sink::remote::RemoteOptions,
) -> Result<usize> {
    use crate::sink::remote::{PutOutcome, Remote};
    if !crate::eval::objstore::is_url_path(path) {
        return record(path, night, study, new);
    }
    let url = path.to_string_lossy();
    let r = Remote::open_read(&url, opts, "[study] history")?;
    let before = r.get("").with_context(|| {
        format!("cannot read the history {url} (check the bucket exists, the credentials, and --s3-endpoint)")
    })?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory for the history")?;
    let local = dir.path().join("history.parquet");
    let mode = match before {
        Some((bytes, version)) => {
            std::fs::write(&local, bytes)
                .with_context(|| format!("cannot stage {url} in {}", local.display()))?;
            object_store::PutMode::Update(version)
        }
        None => object_store::PutMode::Create,
    };
    let total = record(&local, night, study, new).with_context(|| format!("history {url}"))?;
    let bytes =
        std::fs::read(&local).with_context(|| format!("cannot read {}", local.display()))?;
    match r.put_mode("", bytes, mode)? {
        PutOutcome::Written(_) => Ok(total),
        PutOutcome::Exists | PutOutcome::Conflict => bail!(
            "history {url} was changed by another run while night {night} was recorded; nothing was overwritten: re-run this command (a night's rows are replaced, never duplicated)"
        ),
    }
}

/// Write `rows` as a history file (atomic).
pub fn write(path: &Path, rows: &[HistoryRow]) -> Result<()> {
    let b = batch(rows)?;
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema(), None)?;
    w.write(&b)?;
    w.close()?;
    write_atomic(path, &buf).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn row(night: &str, ck: &str, metric: &str, value: f64) -> HistoryRow {
        HistoryRow {
            night: night.into(),
            study: "s".into(),
            checkpoint: ck.into(),
            condition: "color".into(),
            samples: 1000,
            step: Some(500),
            metric: metric.into(),
            value,
            ci_low: Some(value - 1.0),
            ci_high: Some(value + 1.0),
            n_eval: 64,
            n_reference: None,
            dataset_manifest_sha256: Some("ab".into()),
            model_sha256: "features=cd".into(),
            prep_version: "0.1.0".into(),
            config_sha256: "ef".into(),
            images: None,
            real_images: None,
            condition_images: None,
        }
    }

    #[test]
    fn rerunning_a_night_replaces_its_rows() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("h/history.parquet");
        let n1 = [
            row("2026-11-24", "a", "fid", 10.0),
            row("2026-11-24", "a", "kid", 0.1),
        ];
        assert_eq!(record(&p, "2026-11-24", "s", &n1).unwrap(), 2);
        let n2 = [
            row("2026-11-25", "a", "fid", 9.0),
            row("2026-11-25", "a", "kid", 0.09),
        ];
        assert_eq!(record(&p, "2026-11-25", "s", &n2).unwrap(), 4);
        let once = std::fs::read(&p).unwrap();
        // Same night again: identical file, no duplicates.
        assert_eq!(record(&p, "2026-11-25", "s", &n2).unwrap(), 4);
        assert_eq!(std::fs::read(&p).unwrap(), once);
        // Same night with new values: replaced.
        let n2b = [row("2026-11-25", "a", "fid", 8.5)];
        assert_eq!(record(&p, "2026-11-25", "s", &n2b).unwrap(), 3);
        let rows = read(&p).unwrap();
        let fid25: Vec<f64> = rows
            .iter()
            .filter(|r| r.night == "2026-11-25" && r.metric == "fid")
            .map(|r| r.value)
            .collect();
        assert_eq!(fid25, vec![8.5]);
        assert_eq!(rows[0], n1[0]);
        // Nothing else is left in the directory (temp files are renamed away).
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("history.parquet")]);
    }

    #[test]
    fn night_ids_are_checked() {
        assert!(check_night("2026-11-26").is_ok());
        for bad in [
            "2026-13-01",
            "26-11-2026",
            "2026/11/26",
            "2026-11-26x",
            "2026-11-00",
        ] {
            let e = check_night(bad).unwrap_err().to_string();
            assert!(e.contains("YYYY-MM-DD"), "{bad}: {e}");
        }
        assert_eq!(today_utc().len(), 10);
        check_night(&today_utc()).unwrap();
    }

    #[test]
    fn a_foreign_parquet_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new(
            "night",
            DataType::Utf8,
            false,
        )]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec!["x"])) as ArrayRef],
        )
        .unwrap();
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, schema, None).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
        std::fs::write(&p, buf).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("not a prep history file"), "{e}");
    }
}
