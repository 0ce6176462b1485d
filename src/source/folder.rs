//! A folder of images. Captions come from an HF imagefolder `metadata.jsonl` at the
//! folder's root (`{"file_name": ..., "text": ...}` per line) when there is one, else from
//! a same-stem `.txt` next to each image (an image without one gets an empty caption).
//! Without metadata.jsonl the folder is walked recursively in sorted path order.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{RecordIter, Source, SourceInfo};
use crate::record::{Annotations, ImageRef, MetaType, MetaValue, Record};

const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif"];

pub struct FolderSource {
    info: SourceInfo,
    root: PathBuf,
    /// (relative path, caption) in order.
    items: Vec<(String, Option<String>)>,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(&p, root, out)?;
        } else if is_image(&p) {
            let rel = p.strip_prefix(root).unwrap_or(&p);
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

impl FolderSource {
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            bail!(
                "--input {}: not a directory; --source folder expects a folder of images",
                root.display()
            );
        }
        let meta = root.join("metadata.jsonl");
        let items = if meta.is_file() {
            read_metadata(&meta)?
        } else {
            let mut files = Vec::new();
            walk(root, root, &mut files)?;
            files.into_iter().map(|f| (f, None)).collect()
        };
        if items.is_empty() {
            bail!(
                "no images found under {} (looked for {}); point --input at the folder that holds them",
                root.display(),
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
            description: format!("folder {} ({} images)", root.display(), items.len()),
        };
        Ok(FolderSource {
            info,
            root: root.to_path_buf(),
            items,
        })
    }
}

fn read_metadata(path: &Path) -> Result<Vec<(String, Option<String>)>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).with_context(|| {
            format!("{} line {}: not valid JSON; each line must be an object like {{\"file_name\": \"a.jpg\", \"text\": \"...\"}}", path.display(), i + 1)
        })?;
        let Some(file_name) = v.get("file_name").and_then(|f| f.as_str()) else {
            bail!("{} line {}: no \"file_name\" string", path.display(), i + 1);
        };
        let text = match v.get("text") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => bail!(
                "{} line {}: \"text\" must be a string, got {other}",
                path.display(),
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
        let root = self.root;
        Ok(Box::new(self.items.into_iter().map(move |(rel, text)| {
            let path = root.join(&rel);
            let caption = match text {
                Some(t) => Some(t),
                None => {
                    let txt = path.with_extension("txt");
                    match std::fs::read_to_string(&txt) {
                        Ok(t) => Some(t.trim().to_string()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                        Err(e) => {
                            return Err(e)
                                .with_context(|| format!("cannot read caption {}", txt.display()))
                        }
                    }
                }
            };
            let stem = match rel.rfind('.') {
                Some(i) => &rel[..i],
                None => rel.as_str(),
            };
            Ok(Record {
                key: format!("folder/{stem}"),
                captions: caption.into_iter().collect(),
                image: ImageRef::Path(path),
                annotations: Annotations::default(),
                meta: vec![MetaValue::Str(Some(rel))],
                filtered: None,
                expected_sha256: None,
            })
        })))
    }
}
