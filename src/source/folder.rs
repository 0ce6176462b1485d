//! A folder of images. Captions come from an HF imagefolder `metadata.jsonl` at the
//! folder's root (`{"file_name": ..., "text": ...}` per line) when there is one, else from
//! a same-stem `.txt` next to each image (an image without one gets an empty caption).
//! Without metadata.jsonl the folder is walked recursively in sorted path order.

use std::io::BufRead;

use anyhow::{bail, Context, Result};

use super::{RecordIter, Source, SourceInfo};
use crate::input_store::Input;
use crate::record::{Annotations, MetaType, MetaValue, Record};

const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif"];

/// Captions read ahead per request batch from an object store (small objects, fetched
/// concurrently so per-request latency is not paid once per record).
const CAPTION_BATCH: usize = 64;

pub struct FolderSource {
    info: SourceInfo,
    input: Input,
    /// (relative path, caption from metadata.jsonl, has a same-stem .txt) in order.
    items: Vec<(String, Option<String>, bool)>,
    from_metadata: bool,
}

fn is_image(rel: &str) -> bool {
    rel.rsplit_once('.').is_some_and(|(stem, e)| {
        !stem.ends_with('/') && IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
    })
}

fn txt_of(rel: &str) -> String {
    let stem = match rel.rfind('.') {
        Some(i) if !rel[i..].contains('/') => &rel[..i],
        _ => rel,
    };
    format!("{stem}.txt")
}

impl FolderSource {
    pub fn open(input: Input) -> Result<Self> {
        let root = input.display("");
        if !input.is_dir("")? {
            bail!("--input {root}: not a directory; --source folder expects a folder of images",);
        }
        let (items, from_metadata) = match input.read_opt("metadata.jsonl")? {
            Some(bytes) => (
                read_metadata(&input.display("metadata.jsonl"), &bytes[..])?
                    .into_iter()
                    .map(|(f, t)| {
                        let fallback = t.is_none();
                        (f, t, fallback)
                    })
                    .collect::<Vec<_>>(),
                true,
            ),
            None => {
                let files = input.files("")?;
                let txts: std::collections::HashSet<&str> = files
                    .iter()
                    .filter(|f| f.ends_with(".txt"))
                    .map(String::as_str)
                    .collect();
                let items = files
                    .iter()
                    .filter(|f| is_image(f))
                    .map(|f| {
                        let has_txt = txts.contains(txt_of(f).as_str());
                        (f.clone(), None, has_txt)
                    })
                    .collect();
                (items, false)
            }
        };
        if items.is_empty() {
            bail!(
                "no images found under {root} (looked for {}); point --input at the folder that holds them",
                IMAGE_EXTENSIONS.join(", ")
            );
        }
        let info = SourceInfo {
            name: "folder",
            meta_columns: vec![("file_name".into(), MetaType::Str)],
            has_keypoints: false,
            has_seg: false,
            remote: false,
            size_hint: Some(items.len() as u64),
            description: format!("folder {root} ({} images)", items.len()),
            input_store: input.remote().cloned(),
        };
        Ok(FolderSource {
            info,
            input,
            items,
            from_metadata,
        })
    }
}

fn read_metadata(name: &str, reader: impl BufRead) -> Result<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).with_context(|| {
            format!("{name} line {}: not valid JSON; each line must be an object like {{\"file_name\": \"a.jpg\", \"text\": \"...\"}}", i + 1)
        })?;
        let Some(file_name) = v.get("file_name").and_then(|f| f.as_str()) else {
            bail!("{name} line {}: no \"file_name\" string", i + 1);
        };
        let text = match v.get("text") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => bail!(
                "{name} line {}: \"text\" must be a string, got {other}",
                i + 1
            ),
        };
        out.push((file_name.to_string(), text));
    }
    Ok(out)
}

impl Source for FolderSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn records(self: Box<Self>) -> Result<RecordIter> {
        let FolderSource {
            input,
            items,
            from_metadata,
            ..
        } = *self;
        // Captions are read in batches just ahead of the records that use them: locally
        // one file at a time, remotely CAPTION_BATCH objects with requests in flight.
        let mut items = items.into_iter().peekable();
        let batches = std::iter::from_fn(move || {
            items.peek()?;
            let batch: Vec<_> = items.by_ref().take(CAPTION_BATCH).collect();
            Some(batch)
        });
        let make = move |batch: Vec<(String, Option<String>, bool)>| -> Vec<Result<Record>> {
            // Without a caption from metadata.jsonl: the same-stem .txt (remotely one the
            // listing showed; locally whatever is on disk when the record is read).
            let try_txt = |text: &Option<String>, has: bool| {
                text.is_none() && (has || (!from_metadata && !input.is_remote()))
            };
            let want: Vec<String> = batch
                .iter()
                .filter(|(_, text, has)| try_txt(text, *has))
                .map(|(rel, _, _)| txt_of(rel))
                .collect();
            let mut read = input.read_many_opt(&want).into_iter();
            batch
                .into_iter()
                .map(|(rel, text, has)| {
                    let caption = if try_txt(&text, has) {
                        let txt = txt_of(&rel);
                        match read.next().expect("one read per wanted caption") {
                            Ok(Some(b)) => match String::from_utf8(b) {
                                Ok(t) => Some(t.trim().to_string()),
                                Err(_) => {
                                    return Err(anyhow::anyhow!(
                                        "cannot read caption {}: not UTF-8 text",
                                        input.display(&txt)
                                    ))
                                }
                            },
                            Ok(None) => None,
                            Err(e) => {
                                return Err(e.context(format!(
                                    "cannot read caption {}",
                                    input.display(&txt)
                                )))
                            }
                        }
                    } else {
                        text
                    };
                    let stem = match rel.rfind('.') {
                        Some(i) => &rel[..i],
                        None => rel.as_str(),
                    };
                    Ok(Record {
                        key: format!("folder/{stem}"),
                        captions: caption.into_iter().collect(),
                        image: input.image(&rel),
                        annotations: Annotations::default(),
                        meta: vec![MetaValue::Str(Some(rel))],
                        filtered: None,
                        expected_sha256: None,
                    })
                })
                .collect()
        };
        Ok(Box::new(batches.flat_map(make)))
    }
}
