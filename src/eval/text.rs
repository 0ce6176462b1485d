//! CLIP text embeddings for the CLIP score: prompts → CLIP BPE ids ([`ClipTokenizer`]) →
//! a registry text model (decoder `text-features`, e.g. `clip-vit-l14-text`) → one row per
//! prompt. Prompts come from a text file (one per line), or a string column of a Parquet
//! file or a `prep build` / `prep generate` output (`PATH[:COLUMN]`, default `text`, or
//! `prompt` when there is no `text` column).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arrow_array::cast::AsArray;
use arrow_schema::DataType;
use faer::Mat;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::input_store::{Input, ParquetInput};
use crate::models::{DecoderKind, ModelEntry};
use crate::runtime::{Batch, ElemType, Net, RuntimeOptions};
use crate::sink::remote::RemoteOptions;
use crate::tokenize::ClipTokenizer;

pub struct TextEncoder {
    net: Net,
    tokenizer: ClipTokenizer,
    ids_name: String,
    ids_i32: bool,
    mask_name: Option<String>,
    output: usize,
    len: usize,
    pub name: String,
}

impl TextEncoder {
    /// Open a text model of the registry; `tokenizer`: a directory with vocab.json and
    /// merges.txt (default `CACHE/models/files/NAME.tokenizer/`).
    pub fn open(
        entry: &ModelEntry,
        path: &Path,
        tokenizer: Option<&Path>,
        cache_dir: &Path,
        opts: &RuntimeOptions,
    ) -> Result<TextEncoder> {
        let Some(spec) = entry
            .text
            .as_ref()
            .filter(|_| entry.output.decoder == DecoderKind::TextFeatures)
        else {
            bail!(
                "model {} is not a text model (decoder \\\"text-features\\\"); CLIP text embeddings need e.g. clip-vit-l14-text, or a file added with --like clip-vit-l14-text",
                entry.name
            );
        };
        let tok_dir = match tokenizer {
            Some(d) => d.to_path_buf(),
            None => cache_dir.join(format!("{}.tokenizer", entry.name)),
        };
        if !tok_dir.join("vocab.json").is_file() {
            bail!(
                "model {}: no CLIP tokenizer at {} (vocab.json + merges.txt); pass --tokenizer DIR (e.g. a diffusers pipeline's tokenizer/)",
                entry.name,
                tok_dir.display()
            );
        }
        let tokenizer = ClipTokenizer::from_dir(&tok_dir)?;
        crate::models::verify_file(entry, path)?;
        let net = Net::open(&entry.name, path, opts)?;
        let ids = net.input(spec.input_ids.as_deref())?.clone();
        let ids_i32 = match ids.elem {
            ElemType::I64 => false,
            ElemType::I32 => true,
            other => bail!(
                "model {}: input {:?} is {other:?}; token ids must be int64 or int32",
                entry.name,
                ids.name
            ),
        };
        let mask_name = net
            .input(Some(&spec.attention_mask))
            .ok()
            .map(|p| p.name.clone());
        let output = net.output_index(entry.output.name.as_deref())?;
        Ok(TextEncoder {
            net,
            tokenizer,
            ids_name: ids.name,
            ids_i32,
            mask_name,
            output,
            len: spec.context_length,
            name: entry.name.clone(),
        })
    }

    /// One embedding row per prompt, in batches of `batch`.
    pub fn encode(&mut self, prompts: &[String], batch: usize) -> Result<Mat<f64>> {
        let mut rows: Vec<Vec<f32>> = Vec::with_capacity(prompts.len());
        for part in prompts.chunks(batch.max(1)) {
            let refs: Vec<&str> = part.iter().map(String::as_str).collect();
            let ids = self.tokenizer.encode_batch(&refs)?;
            if ids.first().is_some_and(|r| r.len() != self.len) {
                bail!(
                    "model {}: the tokenizer makes {} ids, the model takes {}",
                    self.name,
                    ids[0].len(),
                    self.len
                );
            }
            let n = ids.len();
            let flat: Vec<i64> = ids.iter().flatten().copied().collect();
            // 1 up to and including the first end token, 0 after (HF's mask for eos padding).
            let mask: Vec<i64> = ids
                .iter()
                .flat_map(|r| {
                    let end = r
                        .iter()
                        .position(|&t| t == i64::from(self.tokenizer.eos_id))
                        .unwrap_or(r.len() - 1);
                    (0..r.len()).map(move |i| i64::from(i <= end))
                })
                .collect();
            let flat32: Vec<i32>;
            let mask32: Vec<i32>;
            let shape = [n, self.len];
            let (ids_b, mask_b) = if self.ids_i32 {
                flat32 = flat.iter().map(|&v| v as i32).collect();
                mask32 = mask.iter().map(|&v| v as i32).collect();
                (Batch::I32(&flat32), Batch::I32(&mask32))
            } else {
                (Batch::I64(&flat), Batch::I64(&mask))
            };
            let mut inputs: Vec<(&str, &[usize], Batch<'_>)> =
                vec![(&self.ids_name, &shape, ids_b)];
            if let Some(m) = &self.mask_name {
                inputs.push((m, &shape, mask_b));
            }
            let out = self.net.run_many(&inputs, &[self.output])?;
            let out = &out[0];
            if out.shape().first() != Some(&n) || out.len() % n != 0 {
                bail!(
                    "model {}: output shape {:?} is not one row per prompt",
                    self.name,
                    out.shape()
                );
            }
            let per = out.len() / n;
            let flat_out: Vec<f32> = out.iter().copied().collect();
            for (i, r) in flat_out.chunks_exact(per).enumerate() {
                if let Some(v) = r.iter().find(|v| !v.is_finite()) {
                    bail!(
                        "model {}: non-finite embedding {v} for prompt {:?}",
                        self.name,
                        part[i]
                    );
                }
                rows.push(r.to_vec());
            }
        }
        let d = rows.first().map_or(0, Vec::len);
        Ok(Mat::from_fn(rows.len(), d, |i, j| rows[i][j] as f64))
    }
}

/// Prompts from a text file (one per line) or a Parquet string column (`PATH[:COLUMN]`; a
/// directory means its `data/*.parquet` shards).
pub fn read_prompts(spec: &Path, opts: &RemoteOptions) -> Result<Vec<String>> {
    let (path, column) = super::images::split_column(spec);
    // A local path or an object-store URL: the same layouts either way.
    let input = Input::open_as(&path, opts, "--prompts")?;
    let is_parquet = path.extension().is_some_and(|x| x == "parquet");
    let files: Vec<String> = if !(is_parquet && input.is_remote()) && input.is_dir("")? {
        let shards = input.data_shards()?;
        if shards.is_empty() {
            bail!("{}: no data/ directory of Parquet shards", path.display());
        }
        shards
    } else if is_parquet {
        vec![String::new()]
    } else {
        if column.is_some() {
            bail!(
                "{}: a column can only be named for Parquet input",
                path.display()
            );
        }
        let copy = input.local_copy("")?;
        let text = std::fs::read_to_string(copy.path())
            .with_context(|| format!("cannot read prompts from {}", path.display()))?;
        return Ok(text.lines().map(str::to_string).collect());
    };
    let mut out = Vec::new();
    for rel in files {
        let f = PathBuf::from(input.display(&rel));
        let b = ParquetRecordBatchReaderBuilder::try_new(ParquetInput::open(&input, &rel)?)
            .with_context(|| format!("{}: not a readable Parquet file", f.display()))?;
        let schema = b.schema().clone();
        let col = match &column {
            Some(c) => c.clone(),
            None if schema.field_with_name("text").is_ok() => "text".into(),
            None => "prompt".into(),
        };
        let idx = schema.index_of(&col).map_err(|_| {
            anyhow::anyhow!(
                "{}: no string column {col:?}; name one with {}:COLUMN",
                f.display(),
                path.display()
            )
        })?;
        if !matches!(
            schema.field(idx).data_type(),
            DataType::Utf8 | DataType::LargeUtf8
        ) {
            bail!("{}: column {col:?} is not a string column", f.display());
        }
        let mask = ProjectionMask::roots(b.parquet_schema(), [idx]);
        for batch in b.with_projection(mask).build()? {
            let batch = batch.with_context(|| format!("cannot read {}", f.display()))?;
            let c = batch.column(0);
            match c.data_type() {
                DataType::LargeUtf8 => out.extend(
                    c.as_string::<i64>()
                        .iter()
                        .map(|v| v.unwrap_or("").to_string()),
                ),
                _ => out.extend(
                    c.as_string::<i32>()
                        .iter()
                        .map(|v| v.unwrap_or("").to_string()),
                ),
            }
        }
    }
    Ok(out)
}
