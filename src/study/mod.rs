//! The sample-complexity study: the nightly scoring of checkpoints (`prep eval run` with a
//! `[study]` config), its history store and the power-law fits the report draws.
//!
//! - [`history`]: `history.parquet`, one row per night × checkpoint × metric; a night is
//!   replaced atomically, never duplicated.
//! - [`nightly`]: the study config → features → metrics with CIs → history rows.
//! - [`images`]: image directories / Parquet image columns and the generic ONNX feature model.
//! - [`generation`]: the request handed to `prep generate` for checkpoint entries.
//! - [`control`]: controllability (canny F1, color RMSE) of generated images vs their conditions.
//! - [`fit`]: metric(N) = a·N^(−b) + c by Levenberg–Marquardt, uncertainties, samples needed.

pub mod control;
pub mod fit;
pub mod generation;
pub mod history;
pub mod images;
pub mod nightly;
