//! The cmake-configure and cmake-build steps: configure llama.cpp with the plan's normalised
//! flags (Ninja when installed, ccache as compiler launcher when installed, the CUDA toolkit
//! found when nvcc is not on PATH), then build only the `llama-server` target and hand on the
//! binary with its sha256.

mod build;
mod cmake_cache;
mod cmake_error;
mod configure;
pub mod cuda;
mod digest;
pub mod generator;
pub mod launcher;

pub use build::build;
pub use configure::{configure, configure_facts, configure_facts_on, configure_on};
pub use digest::sha256_file;
