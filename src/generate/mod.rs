//! `prep generate`: Stable Diffusion + T2I-Adapters through ONNX Runtime.

pub mod scheduler;
