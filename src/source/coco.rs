//! The COCO 2017 layout:
//!
//! ```text
//! ROOT/annotations/captions_{split}.json            images + captions (required)
//! ROOT/annotations/person_keypoints_{split}.json    keypoints (needed for keypose)
//! ROOT/{split}/{id:012}.jpg                          images
//! ROOT/stuffthingmaps_trainval2017/{split}/{id:012}.png   COCO-Stuff maps (for seg)
//! ```
//!
//! One record per image, in ascending image id; all captions kept in annotation order.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{RecordIter, Source, SourceInfo};
use crate::condition::ConditionKind;
use crate::config::{BuildConfig, KeyposeFrom};
use crate::input_store::Input;
use crate::record::{Annotations, ImageRef, MetaType, MetaValue, Person, Record};

#[derive(Deserialize)]
struct CaptionsFile {
    images: Vec<CocoImage>,
    annotations: Vec<CaptionAnn>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: i64,
    #[serde(default)]
    width: Option<i64>,
    #[serde(default)]
    height: Option<i64>,
    #[serde(default)]
    file_name: Option<String>,
    #[serde(default)]
    coco_url: Option<String>,
}

#[derive(Deserialize)]
struct CaptionAnn {
    image_id: i64,
    caption: String,
}

#[derive(Deserialize)]
struct KeypointsFile {
    annotations: Vec<KeypointAnn>,
}

#[derive(Deserialize)]
struct KeypointAnn {
    image_id: i64,
    #[serde(default = "person_category")]
    category_id: i64,
    #[serde(default)]
    keypoints: Vec<f32>,
}

fn person_category() -> i64 {
    1
}

struct Entry {
    id: i64,
    file_name: String,
    coco_url: Option<String>,
    width: Option<i64>,
    height: Option<i64>,
    captions: Vec<String>,
    persons: Option<Vec<Person>>,
}

pub struct CocoSource {
    info: SourceInfo,
    input: Input,
    split: String,
    /// Relative to the input root.
    seg_dir: Option<String>,
    entries: Vec<Entry>,
    /// No local image folder: images come from each entry's `coco_url`.
    remote: bool,
}

/// Parse `rel` under the input (an object is streamed to a temporary file first).
fn read_json<T: for<'de> Deserialize<'de>>(input: &Input, rel: &str, what: &str) -> Result<T> {
    let name = input.display(rel);
    let copy = input.local_copy(rel)?;
    let file = File::open(copy.path()).with_context(|| format!("cannot open {what} {name}"))?;
    serde_json::from_reader(BufReader::with_capacity(1 << 20, file)).with_context(|| {
        format!(
            "{name} is not a valid COCO {what} file; check that the download is complete (re-download or re-extract it)",
        )
    })
}

impl CocoSource {
    /// `name` is the `source` column and key prefix (`coco`, or `demo` for the bundled data).
    pub fn open(cfg: &BuildConfig, input: Input, name: &'static str) -> Result<Self> {
        if !input.is_dir("")? {
            bail!(
                "--input {}: not a directory; --source {name} expects the COCO root that holds annotations/ and {}/",
                input.display(""),
                cfg.split
            );
        }
        let split = cfg.split.clone();
        let captions_rel = format!("annotations/captions_{split}.json");
        let captions_path = input.display(&captions_rel);
        if !input.is_file(&captions_rel)? {
            bail!(
                "{captions_path} not found; --source {name} needs the COCO captions for split {split:?} (check --input and --split)",
            );
        }
        let captions: CaptionsFile = read_json(&input, &captions_rel, "captions")?;

        let wants_keypose =
            cfg.conditions.contains(&ConditionKind::Keypose) && cfg.keypose_from == KeyposeFrom::Gt;
        let kp_rel = format!("annotations/person_keypoints_{split}.json");
        let kp_path = input.display(&kp_rel);
        let keypoints: Option<KeypointsFile> = if input.is_file(&kp_rel)? {
            Some(read_json(&input, &kp_rel, "person_keypoints")?)
        } else if wants_keypose {
            bail!(
                "{kp_path} not found; keypose from ground truth needs COCO's person_keypoints annotations for split {split:?}",
            );
        } else {
            None
        };

        let seg_rel = format!("stuffthingmaps_trainval2017/{split}");
        let seg_dir = if input.is_dir(&seg_rel)? {
            Some(seg_rel)
        } else if cfg.conditions.contains(&ConditionKind::Seg) {
            bail!(
                "{} not found; the seg condition needs the COCO-Stuff label maps (stuffthingmaps_trainval2017.zip extracted under --input)",
                input.display(&seg_rel)
            );
        } else {
            None
        };

        let mut by_id: BTreeMap<i64, Entry> = BTreeMap::new();
        for img in captions.images {
            let file_name = img
                .file_name
                .unwrap_or_else(|| format!("{:012}.jpg", img.id));
            let prev = by_id.insert(
                img.id,
                Entry {
                    id: img.id,
                    file_name,
                    coco_url: img.coco_url.filter(|u| !u.is_empty()),
                    width: img.width,
                    height: img.height,
                    captions: Vec::new(),
                    persons: keypoints.as_ref().map(|_| Vec::new()),
                },
            );
            if prev.is_some() {
                bail!("{captions_path}: image id {} is listed twice", img.id);
            }
        }
        for ann in captions.annotations {
            match by_id.get_mut(&ann.image_id) {
                Some(e) => e.captions.push(ann.caption.trim().to_string()),
                None => bail!(
                    "{captions_path}: a caption refers to image id {}, which is not in its images list",
                    ann.image_id
                ),
            }
        }
        if let Some(kp) = keypoints {
            for ann in kp.annotations {
                if ann.category_id != 1 || ann.keypoints.is_empty() {
                    continue;
                }
                if ann.keypoints.len() != 51 {
                    bail!(
                        "{kp_path}: an annotation of image {} has {} keypoint values; COCO persons have 17 × 3 = 51",
                        ann.image_id,
                        ann.keypoints.len()
                    );
                }
                let mut keypoints = [[0f32; 3]; 17];
                for (k, chunk) in keypoints.iter_mut().zip(ann.keypoints.chunks_exact(3)) {
                    k.copy_from_slice(chunk);
                }
                // Keypoint files may cover images without captions; those are skipped.
                if let Some(Some(persons)) =
                    by_id.get_mut(&ann.image_id).map(|e| e.persons.as_mut())
                {
                    persons.push(Person { keypoints });
                }
            }
        }
        let entries: Vec<Entry> = by_id.into_values().collect();
        // Without ROOT/{split}/ the images are downloaded from their coco_url.
        let remote = !input.is_dir(&split)?;
        if remote {
            if let Some(e) = entries.iter().find(|e| e.coco_url.is_none()) {
                bail!(
                    "{} not found, and image {} in {captions_path} has no coco_url to download it from; extract {split}.zip under --input",
                    input.display(&split),
                    e.id,
                );
            }
        }
        let info = SourceInfo {
            name,
            meta_columns: vec![
                ("image_id".into(), MetaType::Int),
                ("original_width".into(), MetaType::Int),
                ("original_height".into(), MetaType::Int),
            ],
            has_keypoints: entries.first().is_some_and(|e| e.persons.is_some()),
            has_seg: seg_dir.is_some(),
            remote,
            size_hint: Some(entries.len() as u64),
            description: format!(
                "COCO {split} at {} ({} images)",
                input.display(""),
                entries.len()
            ),
            input_store: input.remote().cloned(),
        };
        Ok(CocoSource {
            info,
            input,
            split,
            seg_dir,
            entries,
            remote,
        })
    }
}

impl Source for CocoSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn records(self: Box<Self>) -> Result<RecordIter> {
        let CocoSource {
            info,
            input,
            split,
            seg_dir,
            entries,
            remote,
        } = *self;
        let name = info.name;
        Ok(Box::new(entries.into_iter().map(move |e| {
            Ok(Record {
                key: format!("{name}/{split}/{:012}", e.id),
                captions: e.captions,
                image: match (&e.coco_url, remote) {
                    (Some(url), true) => ImageRef::Url(url.clone()),
                    _ => input.image(&format!("{split}/{}", e.file_name)),
                },
                annotations: Annotations {
                    persons: e.persons,
                    seg_map: seg_dir
                        .as_ref()
                        .map(|d| input.image(&format!("{d}/{:012}.png", e.id))),
                },
                meta: vec![
                    MetaValue::Int(Some(e.id)),
                    MetaValue::Int(e.width),
                    MetaValue::Int(e.height),
                ],
                filtered: None,
                expected_sha256: None,
            })
        })))
    }
}
