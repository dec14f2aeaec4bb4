//! The preflight-tools step and what other steps need to know about the host: finding
//! commands on a PATH, the distribution and its package manager, the CUDA toolkit, and the
//! tool versions cached by executable identity (`${cache}/tools.json`).

pub mod cuda;
pub mod distro;
pub mod host;
pub mod preflight;
pub mod tool_versions;
pub mod which;

pub use cuda::{find_cuda, CudaToolkit};
pub use distro::{OsRelease, PackageManager};
pub use host::Host;
pub use preflight::{check, facts, run, ToolCheck};
pub use provision_executor::cache_file::CacheFile;
pub use tool_versions::{ExeIdentity, ToolVersions};
pub use which::find_on_path;
