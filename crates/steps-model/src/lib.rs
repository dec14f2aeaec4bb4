//! The model steps: model-resolve (local files, Hugging Face cache, URLs; verified, resumable,
//! cached digests), GGUF header inspection, and vram-fit (`POOL_UNAVAILABLE` before spawn).

pub mod digest;
pub mod download;
pub mod estimate;
pub mod gguf;
pub mod gguf_writer;
pub mod hash_progress;
pub mod hf;
pub mod hf_list;
pub mod hints;
pub mod http;
pub mod ledger;
pub mod model_info;
pub mod quant;
pub mod refusal;
pub mod resolve;
pub mod shard_set;
pub mod vram_fit;

pub use estimate::{estimate, largest_fitting_ctx, Estimate, FitInput, GpuLayers};
pub use gguf::{Gguf, GgufError};
pub use model_info::ModelInfo;
pub use resolve::{facts, locate, resolve, run, Located, ModelEnv, Resolved, Where};
