//! Rows → one Parquet shard, in the layout HF `datasets` decodes into PIL images.
//!
//! Image columns are `struct{bytes: binary, path: string}` and the Arrow schema metadata
//! key `huggingface` carries `{"info": {"features": {...}}}` with `{"_type": "Image"}` for
//! each, so `load_dataset("parquet", ...)` yields images, and diffusers'
//! `train_t2i_adapter_sdxl.py --conditioning_image_column depth` works on the output.
//! Columns without an entry there are inferred by `datasets` from their Arrow type.
//!
//! Output bytes depend only on the rows: fixed writer settings, a fixed `created_by`, row
//! groups cut by row count only.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::builder::{
    BinaryBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder, ListBuilder,
    StringBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::HashingFile;
use crate::condition::ConditionKind;
use crate::record::{MetaType, MetaValue};

/// A finished output row.
#[derive(Debug, Clone)]
pub struct Row {
    pub key: String,
    /// Encoded image (JPEG/PNG/WebP).
    pub image: Vec<u8>,
    pub text: String,
    pub captions: Vec<String>,
    /// Encoded PNG per condition, in [`DatasetSchema::conditions`] order.
    pub conditions: Vec<Vec<u8>>,
    pub width: u32,
    pub height: u32,
    /// sha256 (hex) of the original image bytes as downloaded/read.
    pub sha256: String,
    /// Persons as 51 floats `[x, y, v] × 17` in output pixel coordinates.
    pub keypoints: Option<Vec<Vec<f32>>>,
    pub meta: Vec<MetaValue>,
}

/// The columns of a dataset; identical for every shard of a run.
#[derive(Debug, Clone)]
pub struct DatasetSchema {
    pub source: String,
    pub image_ext: &'static str,
    pub conditions: Vec<ConditionKind>,
    pub keypoints: bool,
    pub meta: Vec<(String, MetaType)>,
}

fn image_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]))
}

fn meta_type(t: MetaType) -> (DataType, &'static str) {
    match t {
        MetaType::Int => (DataType::Int64, "int64"),
        MetaType::Float => (DataType::Float64, "float64"),
        MetaType::Str => (DataType::Utf8, "string"),
    }
}

impl DatasetSchema {
    /// Image-typed columns: `image` and one per condition.
    pub fn image_columns(&self) -> Vec<String> {
        let mut v = vec!["image".to_string()];
        v.extend(self.conditions.iter().map(|c| c.name().to_string()));
        v
    }

    pub fn arrow_schema(&self) -> Schema {
        let mut fields = vec![
            Field::new("key", DataType::Utf8, true),
            Field::new("image", image_type(), true),
            Field::new("text", DataType::Utf8, true),
            Field::new(
                "captions",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ),
        ];
        for c in &self.conditions {
            fields.push(Field::new(c.name(), image_type(), true));
        }
        fields.push(Field::new("width", DataType::Int32, true));
        fields.push(Field::new("height", DataType::Int32, true));
        fields.push(Field::new("source", DataType::Utf8, true));
        fields.push(Field::new("sha256", DataType::Utf8, true));
        if self.keypoints {
            let inner = DataType::List(Arc::new(Field::new("item", DataType::Float32, true)));
            fields.push(Field::new(
                "keypoints",
                DataType::List(Arc::new(Field::new("item", inner, true))),
                true,
            ));
        }
        for (name, t) in &self.meta {
            fields.push(Field::new(name, meta_type(*t).0, true));
        }
        let mut features = serde_json::Map::new();
        let value = |dtype: &str| serde_json::json!({"dtype": dtype, "_type": "Value"});
        features.insert("key".into(), value("string"));
        features.insert("image".into(), serde_json::json!({"_type": "Image"}));
        features.insert("text".into(), value("string"));
        for c in &self.conditions {
            features.insert(c.name().into(), serde_json::json!({"_type": "Image"}));
        }
        features.insert("width".into(), value("int32"));
        features.insert("height".into(), value("int32"));
        features.insert("source".into(), value("string"));
        features.insert("sha256".into(), value("string"));
        for (name, t) in &self.meta {
            features.insert(name.clone(), value(meta_type(*t).1));
        }
        let hf = serde_json::json!({"info": {"features": features}});
        let mut md = std::collections::HashMap::new();
        md.insert("huggingface".to_string(), hf.to_string());
        Schema::new(fields).with_metadata(md)
    }

    /// Rows per row group: about 64 MiB of decoded pixels per group, at least 8 rows.
    pub fn row_group_rows(&self, resolution: u32) -> usize {
        let per_row = u64::from(resolution).pow(2) * 3 * (1 + self.conditions.len() as u64);
        ((64u64 << 20) / per_row.max(1)).clamp(8, 1000) as usize
    }

    fn writer_properties(&self, resolution: u32) -> WriterProperties {
        let mut b = WriterProperties::builder()
            .set_created_by(concat!("prep ", env!("CARGO_PKG_VERSION")).to_string())
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid zstd level"),
            ))
            .set_max_row_group_row_count(Some(self.row_group_rows(resolution)));
        for col in self.image_columns() {
            // Encoded images do not compress, and min/max statistics of image bytes are noise.
            let bytes = ColumnPath::new(vec![col.clone(), "bytes".into()]);
            b = b
                .set_column_compression(bytes.clone(), Compression::UNCOMPRESSED)
                .set_column_statistics_enabled(bytes.clone(), EnabledStatistics::None)
                .set_column_dictionary_enabled(bytes, false);
        }
        b.build()
    }
}

/// Streams rows into a Parquet file; only the current row group is held in memory.
pub struct ShardWriter {
    schema: Arc<Schema>,
    dataset: DatasetSchema,
    writer: ArrowWriter<BufWriter<HashingFile>>,
    rows: usize,
}

impl ShardWriter {
    pub fn create(path: &Path, dataset: &DatasetSchema, resolution: u32) -> Result<Self> {
        let schema = Arc::new(dataset.arrow_schema());
        let file = HashingFile::create(path)?;
        let writer = ArrowWriter::try_new(
            BufWriter::with_capacity(1 << 20, file),
            schema.clone(),
            Some(dataset.writer_properties(resolution)),
        )?;
        Ok(ShardWriter {
            schema,
            dataset: dataset.clone(),
            writer,
            rows: 0,
        })
    }

    pub fn write(&mut self, rows: &[Row]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = to_batch(&self.schema, &self.dataset, rows)?;
        self.writer.write(&batch)?;
        self.rows += rows.len();
        Ok(())
    }
    /// Append rows already in this dataset's Arrow layout (e.g. read back from an earlier
    /// shard when merging retried rows in).
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch)?;
        self.rows += batch.num_rows();
        Ok(())
    }

    /// Finish the file (footer written, data flushed to the OS). Returns the row count
    /// and the file's size and SHA-256.
    pub fn finish(self) -> Result<(usize, (u64, String))> {
        let rows = self.rows;
        let inner = self.writer.into_inner()?;
        let file = inner.into_inner().map_err(|e| e.into_error())?;
        Ok((rows, file.finish()))
    }
}

fn image_array(
    rows: &[Row],
    bytes: impl Fn(&Row) -> &[u8],
    path: impl Fn(&Row) -> String,
) -> ArrayRef {
    // Sized up front: growing by doubling would copy ~100 KB images several times over.
    let total: usize = rows.iter().map(|r| bytes(r).len()).sum();
    let mut b = BinaryBuilder::with_capacity(rows.len(), total);
    let mut p = StringBuilder::new();
    for r in rows {
        b.append_value(bytes(r));
        p.append_value(path(r));
    }
    let DataType::Struct(fields) = image_type() else {
        unreachable!()
    };
    Arc::new(StructArray::new(
        fields,
        vec![
            Arc::new(b.finish()) as ArrayRef,
            Arc::new(p.finish()) as ArrayRef,
        ],
        None,
    ))
}

/// File-name hint stored in the `path` field of image structs.
fn file_hint(key: &str, column: &str, ext: &str) -> String {
    let base = key.replace('/', "_");
    if column == "image" {
        format!("{base}.{ext}")
    } else {
        format!("{base}.{column}.png")
    }
}

fn to_batch(schema: &Arc<Schema>, ds: &DatasetSchema, rows: &[Row]) -> Result<RecordBatch> {
    let mut cols: Vec<ArrayRef> = Vec::new();
    let strings = |f: &dyn Fn(&Row) -> &str| -> ArrayRef {
        let mut b = StringBuilder::new();
        for r in rows {
            b.append_value(f(r));
        }
        Arc::new(b.finish())
    };
    cols.push(strings(&|r| &r.key));
    cols.push(image_array(
        rows,
        |r| &r.image,
        |r| file_hint(&r.key, "image", ds.image_ext),
    ));
    cols.push(strings(&|r| &r.text));
    let mut caps = ListBuilder::new(StringBuilder::new());
    for r in rows {
        for c in &r.captions {
            caps.values().append_value(c);
        }
        caps.append(true);
    }
    cols.push(Arc::new(caps.finish()));
    for (i, c) in ds.conditions.iter().enumerate() {
        cols.push(image_array(
            rows,
            |r| &r.conditions[i],
            |r| file_hint(&r.key, c.name(), "png"),
        ));
    }
    let ints = |f: &dyn Fn(&Row) -> u32| -> ArrayRef {
        let mut b = Int32Builder::new();
        for r in rows {
            b.append_value(f(r) as i32);
        }
        Arc::new(b.finish())
    };
    cols.push(ints(&|r| r.width));
    cols.push(ints(&|r| r.height));
    let mut src = StringBuilder::new();
    for _ in rows {
        src.append_value(&ds.source);
    }
    cols.push(Arc::new(src.finish()));
    cols.push(strings(&|r| &r.sha256));
    if ds.keypoints {
        let mut b = ListBuilder::new(ListBuilder::new(Float32Builder::new()));
        for r in rows {
            match &r.keypoints {
                Some(persons) => {
                    for p in persons {
                        b.values().values().append_slice(p);
                        b.values().append(true);
                    }
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        cols.push(Arc::new(b.finish()));
    }
    for (i, (name, t)) in ds.meta.iter().enumerate() {
        let col: ArrayRef = match t {
            MetaType::Int => {
                let mut b = Int64Builder::new();
                for r in rows {
                    match &r.meta[i] {
                        MetaValue::Int(v) => b.append_option(*v),
                        other => anyhow::bail!("column {name}: expected an integer, got {other:?}"),
                    }
                }
                Arc::new(b.finish())
            }
            MetaType::Float => {
                let mut b = Float64Builder::new();
                for r in rows {
                    match &r.meta[i] {
                        MetaValue::Float(v) => b.append_option(*v),
                        other => anyhow::bail!("column {name}: expected a number, got {other:?}"),
                    }
                }
                Arc::new(b.finish())
            }
            MetaType::Str => {
                let mut b = StringBuilder::new();
                for r in rows {
                    match &r.meta[i] {
                        MetaValue::Str(v) => b.append_option(v.as_deref()),
                        other => anyhow::bail!("column {name}: expected text, got {other:?}"),
                    }
                }
                Arc::new(b.finish())
            }
        };
        cols.push(col);
    }
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// One row of `status/part-XXXXX.parquet`: every input row, exactly once.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    pub key: String,
    pub url: String,
    /// `success`, `failed` or `filtered`.
    pub status: &'static str,
    /// The failure class or filter reason.
    pub error: Option<String>,
    pub detail: Option<String>,
    pub http_status: Option<u16>,
    pub attempts: u32,
}

pub fn status_schema() -> Schema {
    Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("detail", DataType::Utf8, true),
        Field::new("http_status", DataType::Int32, true),
        Field::new("attempts", DataType::Int32, false),
    ])
}

/// Write a shard's status rows to `path` (small: one row per input record); returns the
/// file's size and SHA-256.
pub fn write_status(path: &Path, rows: &[StatusRow]) -> Result<(u64, String)> {
    let schema = Arc::new(status_schema());
    let mut key = StringBuilder::new();
    let mut url = StringBuilder::new();
    let mut status = StringBuilder::new();
    let mut error = StringBuilder::new();
    let mut detail = StringBuilder::new();
    let mut http = Int32Builder::new();
    let mut attempts = Int32Builder::new();
    for r in rows {
        key.append_value(&r.key);
        url.append_value(&r.url);
        status.append_value(r.status);
        error.append_option(r.error.as_deref());
        detail.append_option(r.detail.as_deref());
        http.append_option(r.http_status.map(i32::from));
        attempts.append_value(r.attempts as i32);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(key.finish()),
        Arc::new(url.finish()),
        Arc::new(status.finish()),
        Arc::new(error.finish()),
        Arc::new(detail.finish()),
        Arc::new(http.finish()),
        Arc::new(attempts.finish()),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols)?;
    let file = HashingFile::create(path)?;
    let props = WriterProperties::builder()
        .set_created_by(concat!("prep ", env!("CARGO_PKG_VERSION")).to_string())
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid zstd level"),
        ))
        .build();
    let mut w = ArrowWriter::try_new(BufWriter::new(file), schema, Some(props))?;
    w.write(&batch)?;
    let file = w.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    Ok(file.finish())
}

/// Read a shard's status rows back.
pub fn read_status(path: &Path) -> Result<Vec<StatusRow>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int32Type;
    use arrow_array::Array;
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable status file", path.display()))?
        .build()?;
    let mut out = Vec::new();
    for batch in reader {
        let b = batch.with_context(|| format!("cannot read {}", path.display()))?;
        let col = |n: &str| {
            b.column_by_name(n)
                .with_context(|| format!("{}: no column {n}", path.display()))
        };
        let key = col("key")?.as_string::<i32>().clone();
        let url = col("url")?.as_string::<i32>().clone();
        let status = col("status")?.as_string::<i32>().clone();
        let error = col("error")?.as_string::<i32>().clone();
        let detail = col("detail")?.as_string::<i32>().clone();
        let http = col("http_status")?.as_primitive::<Int32Type>().clone();
        let attempts = col("attempts")?.as_primitive::<Int32Type>().clone();
        for i in 0..b.num_rows() {
            let opt =
                |a: &arrow_array::StringArray| (!a.is_null(i)).then(|| a.value(i).to_string());
            out.push(StatusRow {
                key: key.value(i).to_string(),
                url: url.value(i).to_string(),
                status: match status.value(i) {
                    "success" => "success",
                    "filtered" => "filtered",
                    _ => "failed",
                },
                error: opt(&error),
                detail: opt(&detail),
                http_status: (!http.is_null(i)).then(|| http.value(i) as u16),
                attempts: attempts.value(i).max(0) as u32,
            });
        }
    }
    Ok(out)
}
