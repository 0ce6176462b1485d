//! The ONNX Runtime layer shared by everything that runs a network: the model-backed
//! conditions (here), and the feature extractors and the diffusion pipeline that build on
//! it.
//!
//! - The runtime library is loaded at run time (`ort` with `load-dynamic`): from
//!   `ORT_DYLIB_PATH`, else `.ort/libonnxruntime.so.1.31.1` next to the binary or in one of
//!   its parent directories (where `scripts/setup-ort` installs it) or in the current
//!   directory. The library is the one in the PyPI wheel `onnxruntime==1.31.1`.
//! - One process-wide [`ort::environment::Environment`]; [`Net`] is one session with its
//!   I/O description, built once and reused (`Session::run` takes `&mut self`: one `Net`
//!   per worker that runs inference).
//! - [`RuntimeOptions`]: intra-op threads (from `--threads`) and the device (`--device`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use ndarray::ArrayD;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

/// The ONNX Runtime version prep's `ort` bindings are built for (`api-31`).
pub const ORT_VERSION: &str = "1.31.1";
const LIB_NAME: &str = "libonnxruntime.so.1.31.1";

/// Where inference runs.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    /// NVIDIA GPU through ONNX Runtime's CUDA execution provider (needs the GPU build).
    Cuda,
}

/// Session settings that do not change results.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuntimeOptions {
    /// Intra-op threads (`None`: ONNX Runtime's default, all cores).
    pub threads: Option<usize>,
    pub device: Device,
}

/// Lower the calling thread's scheduling priority (nice +10, Linux: per thread), so that
/// work on it yields to inference threads. Best effort: failures are ignored.
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// Find the ONNX Runtime shared library.
pub fn find_library() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!(
            "ORT_DYLIB_PATH={} is not a file; point it at libonnxruntime.so.{ORT_VERSION}, or unset it and run scripts/setup-ort",
            p.display()
        );
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(4) {
            candidates.push(dir.join(".ort").join(LIB_NAME));
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        candidates.push(cwd.join(".ort").join(LIB_NAME));
    }
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    bail!(
        "the ONNX Runtime library ({LIB_NAME}) was not found (looked in ORT_DYLIB_PATH and {}); \
         model-backed conditions need it: run scripts/setup-ort in the prep checkout \
         (it takes it from the PyPI wheel onnxruntime=={ORT_VERSION}), or set ORT_DYLIB_PATH to your copy",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

static ENV: OnceLock<std::result::Result<(PathBuf, ort::environment::Environment), String>> =
    OnceLock::new();

/// The process-wide ONNX Runtime environment (loads the library on first use).
pub fn environment() -> Result<&'static ort::environment::Environment> {
    let r = ENV.get_or_init(|| {
        let lib = find_library().map_err(|e| format!("{e:#}"))?;
        let builder = ort::init_from(&lib).map_err(|e| {
            format!(
                "cannot load the ONNX Runtime library {}: {e}; reinstall it with scripts/setup-ort (onnxruntime {ORT_VERSION})",
                lib.display()
            )
        })?;
        let env = builder
            .with_name("prep")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", lib.display()))?;
        Ok((lib, env))
    });
    match r {
        Ok((_, env)) => Ok(env),
        Err(e) => Err(anyhow!("{e}")),
    }
}

/// The library path the environment was loaded from.
pub fn library_path() -> Option<&'static Path> {
    ENV.get()
        .and_then(|r| r.as_ref().ok())
        .map(|(p, _)| p.as_path())
}

/// Element type of a tensor input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    F32,
    I32,
    U8,
    I64,
    Other,
}

/// An input or output of a network: name, element type, shape (`-1` = dynamic).
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub name: String,
    pub elem: ElemType,
    pub shape: Vec<i64>,
}

fn port_info(name: &str, t: &ValueType) -> PortInfo {
    let (elem, shape) = match t {
        ValueType::Tensor { ty, shape, .. } => (
            match ty {
                TensorElementType::Float32 => ElemType::F32,
                TensorElementType::Int32 => ElemType::I32,
                TensorElementType::Uint8 => ElemType::U8,
                TensorElementType::Int64 => ElemType::I64,
                _ => ElemType::Other,
            },
            shape.iter().copied().collect(),
        ),
        _ => (ElemType::Other, Vec::new()),
    };
    PortInfo {
        name: name.to_string(),
        elem,
        shape,
    }
}

/// A batch of input data (row-major, shape given separately).
pub enum Batch<'a> {
    F32(&'a [f32]),
    I32(&'a [i32]),
    I64(&'a [i64]),
}

/// One ONNX Runtime session for one model file, with its I/O description.
pub struct Net {
    /// The model's name (for messages).
    pub name: String,
    pub path: PathBuf,
    pub inputs: Vec<PortInfo>,
    pub outputs: Vec<PortInfo>,
    session: Session,
}

impl Net {
    /// Build a session for `path`. The file must already be verified against its pin.
    pub fn open(name: &str, path: &Path, opts: &RuntimeOptions) -> Result<Net> {
        let env = environment()?;
        let ctx = |what: &str, e: &dyn std::fmt::Display| {
            anyhow!("model {name}: {what} ({}): {e}", path.display())
        };
        let mut b = Session::builder(env).map_err(|e| ctx("cannot create a session", &e))?;
        if let Some(t) = opts.threads {
            b = b
                .with_intra_threads(t.max(1))
                .map_err(|e| ctx("cannot set threads", &e))?;
        }
        // Inference shares the cores with decode/encode: idle intra-op threads block
        // instead of spinning, so they do not steal cycles from the CPU stage.
        b = b
            .with_intra_op_spinning(false)
            .map_err(|e| ctx("cannot configure the session", &e))?;
        if opts.device == Device::Cuda {
            use ort::ep::ExecutionProvider;
            let available = ort::ep::CUDA::is_available().unwrap_or(false);
            if !available {
                bail!(
                    "--device cuda: the ONNX Runtime library {} has no CUDA execution provider (it is the CPU build); \
                     install the GPU build (the PyPI wheel onnxruntime-gpu=={ORT_VERSION}, with CUDA 12 and cuDNN 9) \
                     and point ORT_DYLIB_PATH at its libonnxruntime.so.{ORT_VERSION}, or use --device cpu",
                    library_path().map(|p| p.display().to_string()).unwrap_or_default()
                );
            }
            b = b
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| ctx("cannot use the CUDA execution provider", &e))?;
        }
        let session = b.commit_from_file(path).map_err(|e| {
            anyhow!(
                "model {name}: {} is not a valid ONNX model that ONNX Runtime {ORT_VERSION} can load (truncated, corrupt or not ONNX?): {e}",
                path.display()
            )
        })?;
        let inputs = session
            .inputs()
            .iter()
            .map(|o| port_info(o.name(), o.dtype()))
            .collect();
        let outputs = session
            .outputs()
            .iter()
            .map(|o| port_info(o.name(), o.dtype()))
            .collect();
        Ok(Net {
            name: name.to_string(),
            path: path.to_path_buf(),
            inputs,
            outputs,
            session,
        })
    }

    pub fn input(&self, name: Option<&str>) -> Result<&PortInfo> {
        match name {
            None => self
                .inputs
                .first()
                .with_context(|| format!("model {}: the model has no inputs", self.name)),
            Some(n) => self.inputs.iter().find(|p| p.name == n).with_context(|| {
                format!(
                    "model {}: no input named {n:?} in {} (inputs: {})",
                    self.name,
                    self.path.display(),
                    self.inputs
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
        }
    }

    pub fn output_index(&self, name: Option<&str>) -> Result<usize> {
        match name {
            None if !self.outputs.is_empty() => Ok(self.outputs.len() - 1),
            None => bail!("model {}: the model has no outputs", self.name),
            Some(n) => self
                .outputs
                .iter()
                .position(|p| p.name == n)
                .with_context(|| {
                    format!(
                        "model {}: no output named {n:?} in {} (outputs: {})",
                        self.name,
                        self.path.display(),
                        self.outputs
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }),
        }
    }

    /// Run with one input tensor and return the selected outputs as f32 arrays.
    pub fn run(
        &mut self,
        input: &str,
        shape: &[usize],
        data: Batch<'_>,
        outputs: &[usize],
    ) -> Result<Vec<ArrayD<f32>>> {
        self.run_with(input, shape, data, outputs, |arr, _| Ok(arr.to_owned()))
    }

    /// Like [`Net::run`] on a batch of `n` images, each selected output split along its
    /// first axis into `n` owned per-image arrays, copied once from ONNX Runtime's buffer
    /// (an output without a batch axis is taken whole when `n == 1`).
    pub fn run_split(
        &mut self,
        input: &str,
        shape: &[usize],
        data: Batch<'_>,
        outputs: &[usize],
        n: usize,
    ) -> Result<Vec<Vec<ArrayD<f32>>>> {
        let name = self.name.clone();
        self.run_with(input, shape, data, outputs, |arr, i| {
            if arr.ndim() > 0 && arr.shape()[0] == n {
                Ok(arr
                    .axis_iter(ndarray::Axis(0))
                    .map(|a| a.to_owned())
                    .collect())
            } else if n == 1 {
                Ok(vec![arr.to_owned()])
            } else {
                bail!(
                    "model {name}: output {i} has shape {:?}, without a batch dimension of {n}",
                    arr.shape()
                )
            }
        })
    }

    fn run_with<T>(
        &mut self,
        input: &str,
        shape: &[usize],
        data: Batch<'_>,
        outputs: &[usize],
        mut take: impl FnMut(ndarray::ArrayViewD<'_, f32>, usize) -> Result<T>,
    ) -> Result<Vec<T>> {
        let name = self.name.clone();
        let fail = |e: &dyn std::fmt::Display| {
            anyhow!("model {name}: inference on an input of shape {shape:?} failed: {e}")
        };
        let shape_v: Vec<usize> = shape.to_vec();
        let out = match data {
            Batch::F32(d) => {
                let t = TensorRef::from_array_view((shape_v, d)).map_err(|e| fail(&e))?;
                self.session
                    .run(ort::inputs![input => t])
                    .map_err(|e| fail(&e))?
            }
            Batch::I32(d) => {
                let t = TensorRef::from_array_view((shape_v, d)).map_err(|e| fail(&e))?;
                self.session
                    .run(ort::inputs![input => t])
                    .map_err(|e| fail(&e))?
            }
            Batch::I64(d) => {
                let t = TensorRef::from_array_view((shape_v, d)).map_err(|e| fail(&e))?;
                self.session
                    .run(ort::inputs![input => t])
                    .map_err(|e| fail(&e))?
            }
        };
        let mut res = Vec::with_capacity(outputs.len());
        for &i in outputs {
            let v = &out[i];
            let arr = v
                .try_extract_array::<f32>()
                .map_err(|e| fail(&format!("output {i} is not a float32 tensor: {e}")))?;
            res.push(take(arr, i)?);
        }
        Ok(res)
    }

    /// Run with several named inputs (`(name, shape, data)`) and return the selected
    /// outputs as f32 arrays.
    pub fn run_many(
        &mut self,
        inputs: &[(&str, &[usize], Batch<'_>)],
        outputs: &[usize],
    ) -> Result<Vec<ArrayD<f32>>> {
        let name = self.name.clone();
        let fail = |e: &dyn std::fmt::Display| anyhow!("model {name}: inference failed: {e}");
        let mut feeds: Vec<(String, ort::session::SessionInputValue<'_>)> =
            Vec::with_capacity(inputs.len());
        for (n, shape, data) in inputs {
            let shape_v: Vec<usize> = shape.to_vec();
            let bad = |e: &dyn std::fmt::Display| {
                anyhow!("model {name}: input {n:?} of shape {shape:?}: {e}")
            };
            let v: ort::session::SessionInputValue<'_> = match data {
                Batch::F32(d) => TensorRef::from_array_view((shape_v, *d))
                    .map_err(|e| bad(&e))?
                    .into(),
                Batch::I32(d) => TensorRef::from_array_view((shape_v, *d))
                    .map_err(|e| bad(&e))?
                    .into(),
                Batch::I64(d) => TensorRef::from_array_view((shape_v, *d))
                    .map_err(|e| bad(&e))?
                    .into(),
            };
            feeds.push((n.to_string(), v));
        }
        let out = self.session.run(feeds).map_err(|e| fail(&e))?;
        let mut res = Vec::with_capacity(outputs.len());
        for &i in outputs {
            let arr = out[i]
                .try_extract_array::<f32>()
                .map_err(|e| fail(&format!("output {i} is not a float32 tensor: {e}")))?;
            res.push(arr.to_owned());
        }
        Ok(res)
    }
}
