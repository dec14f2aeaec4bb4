//! The preflight-tools step and what other steps need to know about the host: finding
//! commands on a PATH, the distribution and its package manager, and the CUDA toolkit.

pub mod cuda;
pub mod distro;
pub mod host;
pub mod preflight;
pub mod which;

pub use cuda::{find_cuda, CudaToolkit};
pub use distro::{OsRelease, PackageManager};
pub use host::Host;
pub use preflight::{check, facts, run, ToolCheck};
pub use which::find_on_path;
