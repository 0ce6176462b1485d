//! Conditions: a pure function of the preprocessed image and its (transformed) annotations
//! to a condition map.
//!
//! Architecture invariant: a condition never does I/O and never sees the source image,
//! only [`Prepared`], so every map lines up pixel for pixel with the stored `image`.

pub(crate) mod canny;
pub(crate) mod color;
pub mod dwpose;
mod fill;
mod keypose;
pub mod model;
mod seg;

use anyhow::{bail, Result};
use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

use crate::error::RowFailure;
use crate::record::Person;

pub use keypose::{draw_keypose, KeyposeStyle};
pub use seg::seg_palette;

/// The conditions prep knows. The Parquet column is named after each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConditionKind {
    /// T2I-Adapter spatial palette: cubic downsample by 64, nearest upsample.
    Color,
    /// Keypoints drawn as T2I-Adapter draws MMPose results.
    Keypose,
    /// COCO-Stuff label map in a fixed palette.
    Seg,
    /// Canny edges, thresholds 100/200.
    Canny,
    /// Binary edges (white on black) from an edge model thresholded (T2I-Adapter sketch).
    Sketch,
    /// Soft edges round(clip(p,0,1)·255) from an edge model (ControlNet HED/softedge).
    Hed,
    /// Min–max normalised inverse depth from a depth model (MiDaS).
    Depth,
}

impl ConditionKind {
    pub const ALL: [ConditionKind; 4] = [
        ConditionKind::Color,
        ConditionKind::Keypose,
        ConditionKind::Seg,
        ConditionKind::Canny,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ConditionKind::Color => "color",
            ConditionKind::Keypose => "keypose",
            ConditionKind::Seg => "seg",
            ConditionKind::Canny => "canny",
            ConditionKind::Sketch => "sketch",
            ConditionKind::Hed => "hed",
            ConditionKind::Depth => "depth",
        }
    }

    /// Conditions a model can compute (sketch, hed and depth always run one; keypose
    /// does with `--keypose-from model`).
    pub fn needs_model(self) -> bool {
        matches!(
            self,
            ConditionKind::Sketch
                | ConditionKind::Hed
                | ConditionKind::Depth
                | ConditionKind::Keypose
        )
    }

    /// Parse `a,b,c` (order kept, duplicates refused).
    pub fn parse_list(list: &str) -> Result<Vec<ConditionKind>> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let kind = match name {
                "color" | "colour" => ConditionKind::Color,
                "keypose" | "pose" => ConditionKind::Keypose,
                "seg" | "segmentation" => ConditionKind::Seg,
                "canny" => ConditionKind::Canny,
                "sketch" => ConditionKind::Sketch,
                "hed" | "softedge" => ConditionKind::Hed,
                "depth" => ConditionKind::Depth,
                other => bail!(
                    "unknown condition {other:?} in --condition {list:?}; known conditions: color, keypose, seg, canny, sketch, hed, depth"
                ),
            };
            if out.contains(&kind) {
                bail!("condition {name:?} is listed twice in --condition {list:?}");
            }
            out.push(kind);
        }
        Ok(out)
    }
}

/// The preprocessed image and its annotations in output coordinates.
pub struct Prepared {
    pub rgb: RgbImage,
    /// Persons with keypoints in output coordinates (`None`: the source has no ground truth).
    pub persons: Option<Vec<Person>>,
    /// The label map in output geometry (`None`: no map for this record).
    pub labels: Option<GrayImage>,
}

/// A computed condition map.
pub enum ConditionMap {
    Gray(GrayImage),
    Rgb(RgbImage),
}

impl ConditionMap {
    pub fn channels(&self) -> u8 {
        match self {
            ConditionMap::Gray(_) => 1,
            ConditionMap::Rgb(_) => 3,
        }
    }
    pub fn dimensions(&self) -> (u32, u32) {
        match self {
            ConditionMap::Gray(g) => g.dimensions(),
            ConditionMap::Rgb(c) => c.dimensions(),
        }
    }
    pub fn as_raw(&self) -> &[u8] {
        match self {
            ConditionMap::Gray(g) => g.as_raw(),
            ConditionMap::Rgb(c) => c.as_raw(),
        }
    }
}

/// Per-run settings the conditions need.
#[derive(Debug, Clone)]
pub struct ConditionSettings {
    pub max_persons: Option<usize>,
}

/// Compute one condition.
pub fn compute(
    kind: ConditionKind,
    p: &Prepared,
    settings: &ConditionSettings,
) -> Result<ConditionMap, RowFailure> {
    match kind {
        ConditionKind::Color => Ok(ConditionMap::Rgb(color::spatial_palette(&p.rgb))),
        ConditionKind::Canny => Ok(ConditionMap::Gray(canny::canny_map(&p.rgb))),
        ConditionKind::Seg => match &p.labels {
            Some(labels) => Ok(ConditionMap::Rgb(seg::colorize(labels))),
            None => Err(RowFailure::new(
                "seg_map_missing",
                "no COCO-Stuff label map for this image",
            )),
        },
        ConditionKind::Sketch | ConditionKind::Hed | ConditionKind::Depth => Err(RowFailure::new(
            "internal",
            format!("condition {} is computed by a model stage", kind.name()),
        )),
        ConditionKind::Keypose => match &p.persons {
            Some(persons) => {
                let (w, h) = p.rgb.dimensions();
                let style = KeyposeStyle::t2i_adapter_gt(settings.max_persons);
                Ok(ConditionMap::Rgb(draw_keypose(w, h, persons, &style)))
            }
            None => Err(RowFailure::new(
                "keypoints_missing",
                "no keypoint annotations for this image",
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_condition_lists() {
        assert_eq!(
            ConditionKind::parse_list("color, keypose,seg,canny").unwrap(),
            ConditionKind::ALL.to_vec()
        );
        let err = ConditionKind::parse_list("color,edges")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown condition \"edges\""), "{err}");
        assert!(err.contains("color, keypose, seg, canny"), "{err}");
        assert!(ConditionKind::parse_list("color,color").is_err());
        assert_eq!(
            ConditionKind::parse_list("hed,sketch,depth").unwrap(),
            vec![
                ConditionKind::Hed,
                ConditionKind::Sketch,
                ConditionKind::Depth
            ]
        );
    }
}
