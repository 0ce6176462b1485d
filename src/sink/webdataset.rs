//! WebDataset tar shards: per row `{key}.{jpg|png|webp}`, `{key}.txt` (the caption),
//! `{key}.json` (key, captions, size, sha256, source metadata, keypoints) and one
//! `{key}.{condition}.png` per condition — what webdataset loaders (e.g. T2I-Adapter's
//! LAION loader) read. `/` in keys becomes `_` so each sample is one flat group.
//! Headers are fixed (mtime 0, uid/gid 0, mode 0644), so the bytes are deterministic.

use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result};

use super::parquet::{DatasetSchema, Row};
use super::HashingFile;
use crate::record::MetaValue;

pub struct TarShardWriter {
    builder: tar::Builder<BufWriter<HashingFile>>,
    schema: DatasetSchema,
    rows: usize,
}

impl TarShardWriter {
    pub fn create(path: &Path, schema: &DatasetSchema) -> Result<Self> {
        let file = HashingFile::create(path)?;
        let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
        builder.mode(tar::HeaderMode::Deterministic);
        Ok(TarShardWriter {
            builder,
            schema: schema.clone(),
            rows: 0,
        })
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        self.builder
            .append_data(&mut h, name, data)
            .with_context(|| format!("cannot append {name} to the tar shard"))
    }

    pub fn write(&mut self, rows: &[Row]) -> Result<()> {
        for r in rows {
            let base = r.key.replace('/', "_");
            self.append(&format!("{base}.{}", self.schema.image_ext), &r.image)?;
            self.append(&format!("{base}.txt"), r.text.as_bytes())?;
            let mut meta = serde_json::Map::new();
            meta.insert("key".into(), r.key.clone().into());
            meta.insert("captions".into(), r.captions.clone().into());
            meta.insert("width".into(), r.width.into());
            meta.insert("height".into(), r.height.into());
            meta.insert("sha256".into(), r.sha256.clone().into());
            meta.insert("source".into(), self.schema.source.clone().into());
            for ((name, _), v) in self.schema.meta.iter().zip(&r.meta) {
                let v = match v {
                    MetaValue::Int(i) => i.map(serde_json::Value::from).unwrap_or_default(),
                    MetaValue::Float(f) => f.map(serde_json::Value::from).unwrap_or_default(),
                    MetaValue::Str(s) => s.clone().map(serde_json::Value::from).unwrap_or_default(),
                };
                meta.insert(name.clone(), v);
            }
            if let Some(k) = &r.keypoints {
                meta.insert("keypoints".into(), serde_json::to_value(k)?);
            }
            self.append(&format!("{base}.json"), &serde_json::to_vec(&meta)?)?;
            let conds: Vec<&'static str> =
                self.schema.conditions.iter().map(|c| c.name()).collect();
            for (name, png) in conds.into_iter().zip(&r.conditions) {
                self.append(&format!("{base}.{name}.png"), png)?;
            }
            self.rows += 1;
        }
        Ok(())
    }

    /// Finish the archive; returns the row count and the file's size and SHA-256.
    pub fn finish(self) -> Result<(usize, (u64, String))> {
        let rows = self.rows;
        let inner = self
            .builder
            .into_inner()
            .context("cannot finish the tar shard")?;
        let file = inner.into_inner().map_err(|e| e.into_error())?;
        Ok((rows, file.finish()))
    }
}
