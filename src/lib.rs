//! prep: public image datasets → training data for controllable diffusion adapters.
//!
//! See docs/ARCHITECTURE.md for the code map. The binary (`src/main.rs`) only parses
//! flags ([`cli`]) and calls [`pipeline::build`] or [`inspect`].

pub mod alloc;
pub mod cli;
pub mod condition;
pub mod config;
pub mod cvops;
pub mod error;
pub mod eval;
pub mod fetch;
pub mod generate;
pub mod imaging;
pub mod input_store;
pub mod inspect;
pub mod lease;
pub mod load;
pub mod manifest;
pub mod metrics;
pub mod models;
pub mod models_cmd;
pub mod pipeline;
pub mod record;
pub mod report;
pub mod runtime;
pub mod scaleout;
pub mod sink;
pub mod source;
pub mod study;
pub mod subset;
pub mod tokenize;
