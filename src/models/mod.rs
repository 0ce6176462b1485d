//! Model manifests, the model registry and the model cache.
//!
//! A model entry (TOML, `manifests/models/*.toml`, embedded in the binary) names a network,
//! the conditions it serves, where to download it, its pinned sha256 and the I/O contract
//! prep interprets ([`InputSpec`], [`OutputSpec`]). Adding a model of a known kind is a
//! manifest entry, not code.
//!
//! Entries registered by `prep models add` (or pinned by a first `fetch` of an unpinned
//! entry) live in `CACHE/models/registry/NAME.toml` and override built-in entries of the
//! same name; model files live in `CACHE/models/files/NAME.onnx`, where `CACHE` is
//! `$PREP_CACHE`, else `$XDG_CACHE_HOME/prep`, else `~/.cache/prep`.
//!
//! Every load checks the file's sha256 against the entry's pin first ([`verify_file`]).

pub mod fetch;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::condition::ConditionKind;

/// The built-in manifests, embedded so the binary works from any directory.
const BUILTIN: &[(&str, &str)] = &[
    ("hed.toml", include_str!("../../manifests/models/hed.toml")),
    (
        "pidinet.toml",
        include_str!("../../manifests/models/pidinet.toml"),
    ),
    (
        "midas-dpt-hybrid.toml",
        include_str!("../../manifests/models/midas-dpt-hybrid.toml"),
    ),
    (
        "movenet-lightning.toml",
        include_str!("../../manifests/models/movenet-lightning.toml"),
    ),
    (
        "inception.toml",
        include_str!("../../manifests/models/inception.toml"),
    ),
    (
        "inception-clean.toml",
        include_str!("../../manifests/models/inception-clean.toml"),
    ),
    (
        "clip-vit-l14.toml",
        include_str!("../../manifests/models/clip-vit-l14.toml"),
    ),
    (
        "clip-vit-l14-336.toml",
        include_str!("../../manifests/models/clip-vit-l14-336.toml"),
    ),
    (
        "dinov2-vitl14.toml",
        include_str!("../../manifests/models/dinov2-vitl14.toml"),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    I32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fit {
    /// Pad bottom/right with `pad_value` up to the next multiple.
    Pad,
    /// Resize (bicubic) to the nearest multiple (at least one multiple).
    Resize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Align {
    Center,
    TopLeft,
}

/// The resampling filter of a size policy's resize.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resample {
    /// `cv2.resize(…, INTER_CUBIC)` on uint8, bit-exact (the condition annotators).
    #[default]
    CvCubic,
    /// PyTorch `F.interpolate(mode="bilinear", align_corners=False)` without antialias, on
    /// float (pytorch-fid's Inception input).
    TorchBilinear,
    /// PIL `Image.resize(…, BICUBIC)` on the uint8 image: antialiased, fixed point, rounded
    /// to uint8 (CLIP and DINOv2 transforms).
    PilBicubic,
    /// PIL `BICUBIC` per channel on float ("F" mode), clipped to [0, 255], not re-quantised
    /// (clean-fid's "clean" mode).
    PilBicubicFloat,
}

impl Resample {
    fn is_default(&self) -> bool {
        *self == Resample::CvCubic
    }
}

/// How the preprocessed image is sized for the model. Resizes use the spec's `resample`
/// filter (`cv2.INTER_CUBIC` unless the spec says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SizePolicy {
    /// The image as it is.
    Any,
    /// Resized (aspect ignored) to width × height.
    Fixed { width: u32, height: u32 },
    /// Each side a multiple of `multiple`, by padding or resizing when it is not.
    Multiple { multiple: u32, fit: Fit },
    /// Aspect kept, fitted inside width × height, the rest `pad_value`.
    Letterbox {
        width: u32,
        height: u32,
        align: Align,
    },
    /// Shorter side resized to `size` (longer side ⌊size·long/short⌋), then the centre
    /// `size × size` crop (torchvision `Resize(size)` + `CenterCrop(size)`, as CLIP
    /// preprocesses). Feature models only.
    ShortSide { size: u32 },
}

/// The model input: `x' = (pixel / divide − mean[c]) / std[c]`, channels in `channels`
/// order (mean/std listed in that order), laid out as `layout`, as `dtype`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input name (default: the model's first input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub layout: Layout,
    pub channels: ChannelOrder,
    pub dtype: DType,
    pub size: SizePolicy,
    /// The resize filter (feature models only; conditions use `cv-cubic`).
    #[serde(default, skip_serializing_if = "Resample::is_default")]
    pub resample: Resample,
    #[serde(default = "one")]
    pub divide: f32,
    #[serde(default = "zeros")]
    pub mean: [f32; 3],
    #[serde(default = "ones")]
    pub std: [f32; 3],
    /// Pixel value (0..255, before normalisation) used for padding.
    #[serde(default)]
    pub pad_value: f32,
}

fn one() -> f32 {
    1.0
}
fn zeros() -> [f32; 3] {
    [0.0; 3]
}
fn ones() -> [f32; 3] {
    [1.0; 3]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderKind {
    /// Edge probability map in [0,1] (HED, PiDiNet): `hed` soft map, `sketch` thresholded.
    Edge,
    /// Inverse depth (MiDaS): min–max normalised, uint8.
    Depth,
    /// Single-person (y, x, score) × 17, normalised to the input (MoveNet).
    Movenet,
    /// One feature vector per image (`[N, d]`, or `[N, d, 1, 1]` pooled maps): Inception
    /// pool3, CLIP image embeddings, DINOv2 — the inputs of `prep eval`.
    Features,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Output name (default: the model's last output, e.g. PiDiNet's fused map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub decoder: DecoderKind,
    /// Keypoints scoring below this are not drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keypoint_threshold: Option<f32>,
    /// A single-pose model's person is drawn only when its mean keypoint score is ≥ this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person_threshold: Option<f32>,
}

/// One model manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: String,
    /// Conditions this model can compute (`hed`, `sketch`, `depth`, `keypose`).
    pub conditions: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// Where the ONNX file can be downloaded (tried in order).
    #[serde(default)]
    pub urls: Vec<String>,
    /// Lower-case hex sha256 of the ONNX file; `None`: not pinned yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub license: String,
    /// Conditions this model is the default model of (and `--like CONDITION` copies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_for: Vec<String>,
    pub input: InputSpec,
    pub output: OutputSpec,
}

impl ModelEntry {
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let e: ModelEntry = toml::from_str(text)
            .with_context(|| format!("{origin} is not a valid model manifest"))?;
        e.check()
            .with_context(|| format!("model manifest {origin}"))?;
        Ok(e)
    }

    fn check(&self) -> Result<()> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!(
                "model name {:?}: use letters, digits, '-', '_' or '.'",
                self.name
            );
        }
        if let Some(s) = &self.sha256 {
            if s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
                bail!("sha256 {s:?} of model {} is not 64 hex digits", self.name);
            }
        }
        for c in &self.conditions {
            let kind = ConditionKind::parse_list(c)?;
            let ok = matches!(
                (kind.first(), self.output.decoder),
                (
                    Some(ConditionKind::Hed | ConditionKind::Sketch),
                    DecoderKind::Edge
                ) | (Some(ConditionKind::Depth), DecoderKind::Depth)
                    | (Some(ConditionKind::Keypose), DecoderKind::Movenet)
            );
            if !ok {
                bail!(
                    "model {}: decoder {:?} cannot compute condition {c:?}",
                    self.name,
                    self.output.decoder
                );
            }
        }
        if self.output.decoder == DecoderKind::Features && !self.conditions.is_empty() {
            bail!(
                "model {}: a feature model (decoder \"features\") computes no condition; remove `conditions`",
                self.name
            );
        }
        if self.output.decoder != DecoderKind::Features
            && (matches!(self.input.size, SizePolicy::ShortSide { .. })
                || self.input.resample != Resample::CvCubic)
        {
            bail!(
                "model {}: size policy \"short-side\" and resample filters other than \"cv-cubic\" are for feature models (decoder \"features\")",
                self.name
            );
        }
        if let SizePolicy::ShortSide { size: 0 }
        | SizePolicy::Fixed { width: 0, .. }
        | SizePolicy::Fixed { height: 0, .. } = self.input.size
        {
            bail!("model {}: sizes must be at least 1", self.name);
        }
        if let SizePolicy::Multiple { multiple: 0, .. } = self.input.size {
            bail!("model {}: size multiple must be at least 1", self.name);
        }
        if self.input.divide == 0.0 || self.input.std.contains(&0.0) {
            bail!("model {}: divide and std must be non-zero", self.name);
        }
        Ok(())
    }

    pub fn serves(&self, kind: ConditionKind) -> bool {
        self.conditions.iter().any(|c| c == kind.name())
    }

    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string(self)?)
    }
}

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Builtin,
    User,
}

/// The built-in entries plus the user's, by name.
#[derive(Debug, Clone)]
pub struct Registry {
    pub entries: BTreeMap<String, (ModelEntry, Origin)>,
    pub cache: PathBuf,
}

/// `$PREP_CACHE/models`.
pub fn models_dir() -> PathBuf {
    crate::source::demo::cache_dir().join("models")
}

impl Registry {
    pub fn load() -> Result<Self> {
        Self::load_from(models_dir())
    }

    pub fn load_from(cache: PathBuf) -> Result<Self> {
        let mut entries = BTreeMap::new();
        for (file, text) in BUILTIN {
            let e = ModelEntry::parse(text, &format!("manifests/models/{file}"))?;
            entries.insert(e.name.clone(), (e, Origin::Builtin));
        }
        let dir = cache.join("registry");
        if let Ok(rd) = std::fs::read_dir(&dir) {
            let mut paths: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            paths.sort();
            for p in paths {
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read model entry {}", p.display()))?;
                let e = ModelEntry::parse(&text, &p.display().to_string())?;
                entries.insert(e.name.clone(), (e, Origin::User));
            }
        }
        Ok(Registry { entries, cache })
    }

    pub fn get(&self, name: &str) -> Result<&ModelEntry> {
        match self.entries.get(name) {
            Some((e, _)) => Ok(e),
            None => bail!(
                "unknown model {name:?}; known models: {} (see `prep models list`; register a file with `prep models add {name} --file F.onnx --like CONDITION`)",
                self.entries.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// The default model of a condition.
    pub fn default_for(&self, kind: ConditionKind) -> Result<&ModelEntry> {
        self.entries
            .values()
            .map(|(e, _)| e)
            .find(|e| e.default_for.iter().any(|c| c == kind.name()))
            .or_else(|| {
                self.entries
                    .values()
                    .map(|(e, _)| e)
                    .find(|e| e.serves(kind))
            })
            .with_context(|| {
                format!(
                    "no model serves condition {}; add one with `prep models add NAME --file F.onnx --like {}`",
                    kind.name(),
                    kind.name()
                )
            })
    }

    /// A model name, or a condition name standing for its default model.
    pub fn resolve_like(&self, like: &str) -> Result<&ModelEntry> {
        if let Some((e, _)) = self.entries.get(like) {
            return Ok(e);
        }
        match ConditionKind::parse_list(like).ok().and_then(|v| v.first().copied()) {
            Some(kind) if kind.needs_model() => self.default_for(kind),
            _ => bail!(
                "--like {like:?} is neither a model ({}) nor a model-backed condition (hed, sketch, depth, keypose); feature models are named (e.g. --like inception, --like clip-vit-l14)",
                self.entries.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// The cached file of a model.
    pub fn cached_file(&self, name: &str) -> PathBuf {
        self.cache.join("files").join(format!("{name}.onnx"))
    }

    /// Write a user entry (atomically).
    pub fn save_user_entry(&self, entry: &ModelEntry) -> Result<PathBuf> {
        let dir = self.cache.join("registry");
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "cannot create {} (set PREP_CACHE to a writable directory)",
                dir.display()
            )
        })?;
        let path = dir.join(format!("{}.toml", entry.name));
        let tmp = dir.join(format!(".{}.toml.tmp", entry.name));
        std::fs::write(&tmp, entry.to_toml()?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// sha256 and size of a file.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path)
        .with_context(|| format!("cannot open model file {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .with_context(|| format!("cannot read model file {}", path.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Check a model file against its entry's pin. Returns the sha256.
pub fn verify_file(entry: &ModelEntry, path: &Path) -> Result<String> {
    let Some(pin) = &entry.sha256 else {
        bail!(
            "model {} has no pinned sha256, so {} cannot be checked; pin a file you trust with `prep models add {} --file {} --like {}`",
            entry.name,
            path.display(),
            entry.name,
            path.display(),
            entry.name
        );
    };
    let (sha, bytes) = sha256_file(path)?;
    if !sha.eq_ignore_ascii_case(pin) {
        let size = match entry.bytes {
            Some(b) if b != bytes => {
                format!(" ({bytes} bytes, the pinned file has {b}: truncated or another file?)")
            }
            _ => String::new(),
        };
        bail!(
            "model {}: {} has sha256 {sha}{size}, but the entry pins {pin}; refusing to load it. \
             Use the file the entry was pinned with (`prep models fetch {}`), or register this file under a new name with \
             `prep models add NEW_NAME --file {} --like {}`",
            entry.name,
            path.display(),
            entry.name,
            path.display(),
            entry.name
        );
    }
    Ok(sha)
}

/// `prep models add`: copy `file` into the cache and register it with the I/O spec of
/// `like`, pinned to its sha256. Returns the new entry.
pub fn add(reg: &Registry, name: &str, file: &Path, like: &str) -> Result<ModelEntry> {
    let base = reg.resolve_like(like)?.clone();
    let (sha, bytes) = sha256_file(file)?;
    let mut entry = ModelEntry {
        name: name.to_string(),
        description: format!(
            "registered from {} with the I/O spec of {}",
            file.display(),
            base.name
        ),
        urls: Vec::new(),
        sha256: Some(sha),
        bytes: Some(bytes),
        license: String::new(),
        default_for: Vec::new(),
        ..base
    };
    // `--like CONDITION` narrows the new model to that condition's family.
    if let Ok(kinds) = ConditionKind::parse_list(like) {
        if let Some(k) = kinds.first().filter(|k| k.needs_model()) {
            if !entry.conditions.iter().any(|c| c == k.name()) {
                entry.conditions.push(k.name().to_string());
            }
        }
    }
    entry.check()?;
    let dest = reg.cached_file(name);
    copy_into_cache(file, &dest)?;
    reg.save_user_entry(&entry)?;
    Ok(entry)
}

/// Create the cache directory that will hold `dest`.
pub(crate) fn ensure_cache_dir(dest: &Path) -> Result<()> {
    let dir = dest.parent().context("cache path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create {} (set PREP_CACHE to a writable directory)",
            dir.display()
        )
    })
}

fn copy_into_cache(src: &Path, dest: &Path) -> Result<()> {
    ensure_cache_dir(dest)?;
    if std::fs::canonicalize(src).ok() == std::fs::canonicalize(dest).ok() {
        return Ok(());
    }
    let tmp = dest.with_extension("onnx.tmp");
    std::fs::copy(src, &tmp)
        .with_context(|| format!("cannot copy {} to {}", src.display(), tmp.display()))?;
    std::fs::rename(&tmp, dest).with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifests_parse_and_cover_the_model_conditions() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::load_from(dir.path().to_path_buf()).unwrap();
        assert_eq!(reg.default_for(ConditionKind::Hed).unwrap().name, "hed");
        assert_eq!(
            reg.default_for(ConditionKind::Sketch).unwrap().name,
            "pidinet"
        );
        assert_eq!(
            reg.default_for(ConditionKind::Depth).unwrap().name,
            "midas-dpt-hybrid"
        );
        assert_eq!(
            reg.default_for(ConditionKind::Keypose).unwrap().name,
            "movenet-lightning"
        );
        let hed = reg.get("hed").unwrap();
        assert_eq!(
            hed.sha256.as_deref(),
            Some("ee29740190f2d68f8b7a32f161d3d09f073a468613fac3f94439432b13edba96")
        );
        assert_eq!(hed.input.channels, ChannelOrder::Bgr);
        assert_eq!(reg.resolve_like("depth").unwrap().name, "midas-dpt-hybrid");
        assert!(reg.resolve_like("color").is_err());
        let err = reg.get("nope").unwrap_err().to_string();
        assert!(err.contains("prep models add"), "{err}");
    }

    #[test]
    fn add_pins_and_verify_refuses_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::load_from(dir.path().join("models")).unwrap();
        let f = dir.path().join("m.onnx");
        std::fs::write(&f, b"not really onnx but bytes").unwrap();
        let e = add(&reg, "mine", &f, "depth").unwrap();
        assert_eq!(e.output.decoder, DecoderKind::Depth);
        assert_eq!(e.bytes, Some(25));
        let reg = Registry::load_from(dir.path().join("models")).unwrap();
        let e = reg.get("mine").unwrap();
        assert!(reg.cached_file("mine").exists());
        verify_file(e, &reg.cached_file("mine")).unwrap();
        std::fs::write(&f, b"not really onnx but other").unwrap();
        let err = verify_file(e, &f).unwrap_err().to_string();
        assert!(
            err.contains("model mine") && err.contains("refusing"),
            "{err}"
        );
        std::fs::write(&f, b"not really").unwrap();
        let err = verify_file(e, &f).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }
}
