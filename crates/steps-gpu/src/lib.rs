//! The gpu-check step: detect NVIDIA GPUs (`nvidia-smi`) and check that the devices the GPU
//! pools name exist. The host (its PATH) is injectable, so tests put a fake `nvidia-smi` first.

pub mod apps;
pub mod check;
pub mod csv_line;
pub mod detect;

pub use apps::{compute_apps, ComputeApp};
pub use check::{check, check_alive, facts, run};
pub use detect::{detect, parse, DetectError, Gpu};
