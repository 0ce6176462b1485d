//! The unit of work that flows through the pipeline.
//!
//! A [`Record`] is what a source yields: cheap metadata only (key, captions, where the
//! image lives, annotations). Sources never read or decode image bytes; the loader stage
//! does that.

use std::path::PathBuf;

/// Where a record's image comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageRef {
    /// A file on local disk.
    Path(PathBuf),
    /// An `http://` or `https://` URL, fetched by the loader.
    Url(String),
    /// An object under an object-store `--input`, fetched by the loader.
    Object(crate::input_store::ObjectRef),
}

impl ImageRef {
    /// The path/URL as text, for error messages and the `path` field of image columns.
    pub fn display(&self) -> String {
        match self {
            ImageRef::Path(p) => p.display().to_string(),
            ImageRef::Url(u) => u.clone(),
            ImageRef::Object(o) => o.url(),
        }
    }
}

/// One person's 17 COCO keypoints as `[x, y, v]` in the coordinates of the image they
/// belong to (source coordinates in a [`Record`], output coordinates after preprocessing).
/// `v` is COCO's visibility flag (0 unlabelled, 1 labelled not visible, 2 visible) or a
/// model's confidence score.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub keypoints: [[f32; 3]; 17],
}

/// Ground-truth annotations that conditions may use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotations {
    /// `Some` when the source has keypoint annotations for this image (possibly empty:
    /// an image without people). `None` when the source has no keypoint ground truth.
    pub persons: Option<Vec<Person>>,
    /// COCO-Stuff label map (8-bit single-channel PNG, 0..181, 255 = unlabelled).
    pub seg_map: Option<ImageRef>,
}

/// A typed metadata value carried from the source into its own Parquet column.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Int(Option<i64>),
    Float(Option<f64>),
    Str(Option<String>),
}

/// The declared type of a metadata column (every record of a source has the same columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetaType {
    Int,
    Float,
    Str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Stable, unique key, e.g. `coco/val2017/000000000139`.
    pub key: String,
    /// All captions; the first is the training `text`.
    pub captions: Vec<String>,
    pub image: ImageRef,
    pub annotations: Annotations,
    /// Values for the source's metadata columns, in the order of `Source::meta_columns`.
    pub meta: Vec<MetaValue>,
    /// `Some(reason)` when a metadata filter (e.g. `--min-aesthetic`) dropped this row.
    /// The row still flows through the pipeline so every input row is accounted for.
    pub filtered: Option<String>,
    /// sha256 (hex) the image bytes must have (`--verify-hash`).
    pub expected_sha256: Option<String>,
}

impl Record {
    pub fn text(&self) -> &str {
        self.captions.first().map(String::as_str).unwrap_or("")
    }
}
