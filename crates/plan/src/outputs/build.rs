//! Outputs of the steps that make the engine binary: git-clone, cmake-configure, cmake-build.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// git-clone: the checkout, at exactly this commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GitCloneOutputs {
    /// The full SHA checked out.
    pub commit: String,
    /// The checkout directory.
    pub dir: String,
}

/// cmake-configure: the configured build directory and how it was configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CmakeConfigureOutputs {
    pub build_dir: String,
    pub source_dir: String,
    pub generator: String,
    /// ccache, when the build uses it.
    pub compiler_launcher: Option<String>,
    /// `CCACHE_BASEDIR` of the build, when it uses ccache.
    pub ccache_basedir: Option<String>,
    /// The CUDA toolkit of a CUDA build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_root: Option<String>,
    /// The normalised definitions, `-DNAME=VALUE`, in order.
    pub flags: Vec<String>,
}

/// cmake-build: the engine binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CmakeBuildOutputs {
    pub binary: String,
    /// `sha256:<hex>` of the binary.
    pub engine_digest: String,
    /// The commit the binary was built from, when known.
    pub build_ref: Option<String>,
}
