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
use half::slice::HalfFloatSliceExt;
use ndarray::ArrayD;
use ort::session::Session;
use ort::session::{IoBinding, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, TensorRef, ValueType};

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

/// The nice value of background threads (the lowest priority). Measured with
/// `benches/conditions.sh`'s build on 2 cores: with only the CPU pool at +10, (b)/(a)
/// was 0.79–0.84; with every pipeline thread but inference at +19, 0.84–0.88.
pub const BACKGROUND_NICE: i32 = 19;

/// Lower the calling thread's scheduling priority to [`BACKGROUND_NICE`] (Linux: per
/// thread), so that work on it yields to inference threads: an intra-op thread preempted
/// mid-operator stalls the whole parallel region. Best effort: failures are ignored.
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE);
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

/// Keep ONNX Runtime from starting its usage telemetry: the PyPI library otherwise opens
/// an SQLite store under `~/.cache/Microsoft/DeveloperTools` for events to upload, at every
/// start (~10 ms of a one-image build on this machine). A data tool should send nothing;
/// `ORT_DISABLE_TELEMETRY=0` in the environment keeps the library's default. Called first
/// thing in `main`, while the process has one thread and before the library starts.
pub fn disable_telemetry_by_default() {
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    }
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
            // No usage events (see `disable_telemetry_by_default` for the store itself).
            .with_telemetry(false)
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
    /// IEEE half precision (fp16 exports): prep feeds f32 data converted to f16 and reads
    /// f16 outputs back as f32.
    F16,
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
                TensorElementType::Float16 => ElemType::F16,
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
    /// first axis (an output without a batch axis is taken whole when `n == 1`), and each
    /// image's part handed to `take(image, output, view)` while it is still in ONNX
    /// Runtime's buffer: a caller that reduces it (a depth map to 8 bits) saves the copy and
    /// reads the output while it is in cache; `|_, _, a| Ok(a.to_owned())` copies it once.
    pub fn run_split_with<T>(
        &mut self,
        input: &str,
        shape: &[usize],
        data: Batch<'_>,
        outputs: &[usize],
        n: usize,
        mut take: impl FnMut(usize, usize, ndarray::ArrayViewD<'_, f32>) -> Result<T>,
    ) -> Result<Vec<Vec<T>>> {
        let name = self.name.clone();
        self.run_with(input, shape, data, outputs, |arr, i| {
            if arr.ndim() > 0 && arr.shape()[0] == n {
                arr.axis_iter(ndarray::Axis(0))
                    .enumerate()
                    .map(|(k, a)| take(k, i, a))
                    .collect()
            } else if n == 1 {
                Ok(vec![take(0, i, arr)?])
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
        let elem = self.input_elem(input);
        let v = input_value(elem, shape, &data).map_err(|e| fail(&e))?;
        let out = self
            .session
            .run(vec![(input.to_string(), v)])
            .map_err(|e| fail(&e))?;
        let mut res = Vec::with_capacity(outputs.len());
        for &i in outputs {
            let arr = output_f32(&out[i]).map_err(|e| fail(&format!("output {i}: {e}")))?;
            res.push(take(arr.view(), i)?);
        }
        Ok(res)
    }

    /// The element type of input `name` (F32 when the model has no such input: ONNX
    /// Runtime then names the problem).
    fn input_elem(&self, name: &str) -> ElemType {
        self.inputs
            .iter()
            .find(|p| p.name == name)
            .map_or(ElemType::F32, |p| p.elem)
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
        let mut feeds: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for (n, shape, data) in inputs {
            let v = input_value(self.input_elem(n), shape, data)
                .map_err(|e| anyhow!("model {name}: input {n:?} of shape {shape:?}: {e}"))?;
            feeds.push((n.to_string(), v));
        }
        let out = self.session.run(feeds).map_err(|e| fail(&e))?;
        let mut res = Vec::with_capacity(outputs.len());
        for &i in outputs {
            let arr = output_f32(&out[i]).map_err(|e| fail(&format!("output {i}: {e}")))?;
            res.push(arr.into_owned());
        }
        Ok(res)
    }

    /// An I/O binding for repeated runs whose inputs mostly stay the same (the UNet over
    /// the denoising steps): inputs bound once stay bound — on a GPU they are copied to
    /// the device once, not once per run — and `outputs` are written into buffers that
    /// ONNX Runtime reuses from run to run.
    pub fn binding(&self, outputs: &[usize]) -> Result<Binding> {
        let fail = |e: &dyn std::fmt::Display| {
            anyhow!("model {}: cannot create an I/O binding: {e}", self.name)
        };
        let mut inner = self.session.create_binding().map_err(|e| fail(&e))?;
        let cpu = ort::memory::MemoryInfo::new(
            ort::memory::AllocationDevice::CPU,
            0,
            ort::memory::AllocatorType::Device,
            ort::memory::MemoryType::Default,
        )
        .map_err(|e| fail(&e))?;
        let mut names = Vec::with_capacity(outputs.len());
        for &i in outputs {
            let port = self
                .outputs
                .get(i)
                .with_context(|| format!("model {}: no output {i}", self.name))?;
            inner
                .bind_output_to_device(port.name.as_str(), &cpu)
                .map_err(|e| fail(&e))?;
            names.push(port.name.clone());
        }
        Ok(Binding {
            inner,
            outputs: names,
            bound: 0,
        })
    }

    /// Bind input `name` of `binding` to `data` (converted to the input's element type).
    /// The data is taken at this call: change it by binding again.
    pub fn bind(
        &self,
        binding: &mut Binding,
        name: &str,
        shape: &[usize],
        data: Batch<'_>,
    ) -> Result<()> {
        let bad = |e: &dyn std::fmt::Display| {
            anyhow!(
                "model {}: input {name:?} of shape {shape:?}: {e}",
                self.name
            )
        };
        let v = owned_value(self.input_elem(name), shape, &data).map_err(|e| bad(&e))?;
        binding.inner.bind_input(name, &v).map_err(|e| bad(&e))?;
        binding.bound += 1;
        Ok(())
    }

    /// Run on what `binding` holds; the bound outputs, in the order given to
    /// [`Net::binding`], as f32 arrays.
    pub fn run_bound(&mut self, binding: &Binding) -> Result<Vec<ArrayD<f32>>> {
        let name = self.name.clone();
        let fail = |e: &dyn std::fmt::Display| anyhow!("model {name}: inference failed: {e}");
        let out = self
            .session
            .run_binding(&binding.inner)
            .map_err(|e| fail(&e))?;
        let mut res = Vec::with_capacity(binding.outputs.len());
        for o in &binding.outputs {
            let v = out
                .get(o.as_str())
                .with_context(|| format!("model {name}: output {o:?} was not produced"))?;
            res.push(
                output_f32(v)
                    .map_err(|e| fail(&format!("output {o:?}: {e}")))?
                    .into_owned(),
            );
        }
        Ok(res)
    }
}

/// Inputs and outputs bound to one session ([`Net::binding`]).
pub struct Binding {
    inner: IoBinding,
    outputs: Vec<String>,
    /// How many times an input was bound (tests count the copies a run avoids).
    pub bound: usize,
}

fn to_f16(d: &[f32]) -> Vec<half::f16> {
    let mut v = vec![half::f16::ZERO; d.len()];
    v.convert_from_f32_slice(d);
    v
}

/// `data` as an input value of element type `elem`: borrowed when it already is that
/// type, converted (f32 → f16) otherwise.
fn input_value<'a>(
    elem: ElemType,
    shape: &[usize],
    data: &Batch<'a>,
) -> ort::Result<SessionInputValue<'a>> {
    let s = shape.to_vec();
    Ok(match *data {
        Batch::F32(d) if elem == ElemType::F16 => Tensor::from_array((s, to_f16(d)))?.into(),
        Batch::F32(d) => TensorRef::from_array_view((s, d))?.into(),
        Batch::I32(d) => TensorRef::from_array_view((s, d))?.into(),
        Batch::I64(d) => TensorRef::from_array_view((s, d))?.into(),
    })
}

/// `data` as an owned input value of element type `elem` (for bindings, which keep it).
fn owned_value(elem: ElemType, shape: &[usize], data: &Batch<'_>) -> ort::Result<DynValue> {
    let s = shape.to_vec();
    Ok(match *data {
        Batch::F32(d) if elem == ElemType::F16 => Tensor::from_array((s, to_f16(d)))?.into_dyn(),
        Batch::F32(d) => Tensor::from_array((s, d.to_vec()))?.into_dyn(),
        Batch::I32(d) => Tensor::from_array((s, d.to_vec()))?.into_dyn(),
        Batch::I64(d) => Tensor::from_array((s, d.to_vec()))?.into_dyn(),
    })
}

/// A float output as f32: a view of a float32 tensor, or float16 converted.
fn output_f32(v: &DynValue) -> Result<ndarray::CowArray<'_, f32, ndarray::IxDyn>> {
    match v.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float16,
            ..
        } => {
            let a = v
                .try_extract_array::<half::f16>()
                .map_err(|e| anyhow!("{e}"))?;
            let mut out = vec![0f32; a.len()];
            match a.as_slice() {
                Some(s) => s.convert_to_f32_slice(&mut out),
                None => out
                    .iter_mut()
                    .zip(a.iter())
                    .for_each(|(o, x)| *o = x.to_f32()),
            }
            Ok(ndarray::ArrayD::from_shape_vec(a.shape(), out)
                .map_err(|e| anyhow!("{e}"))?
                .into())
        }
        _ => Ok(v
            .try_extract_array::<f32>()
            .map_err(|e| anyhow!("not a float32 or float16 tensor: {e}"))?
            .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 → f16 rounds to nearest, ties to even, as NumPy's `astype(np.float16)` (the
    /// reference the fp16 pipeline is checked against): bit patterns from NumPy.
    #[test]
    fn f16_conversion_rounds_like_numpy() {
        let x = [
            1.0 + 2f32.powi(-11),
            1.0 + 3.0 * 2f32.powi(-11),
            65519.0,
            65520.0,
            1e-8,
            6e-8,
            -2.5e-4,
        ];
        let bits: Vec<u16> = to_f16(&x).iter().map(|h| h.to_bits()).collect();
        assert_eq!(bits, [15360, 15362, 31743, 31744, 0, 1, 35865]);
    }
}
