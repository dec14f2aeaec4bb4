//! `provision export kubernetes`: the pools of a provision config as Kubernetes manifests — per
//! pool a Deployment and a Service (and, when asked, a PersistentVolumeClaim for models) —
//! built as typed `k8s-openapi` objects from the same validated config and the same normalised
//! llama-server flags that `provision plan` uses.
//!
//! Nothing here runs a process or touches the network: the only I/O is reading a model's GGUF
//! header when the model file is on this machine (for the memory request).
//!
//! The Kubernetes version is the `k8s-openapi` feature of this crate ([`KUBERNETES_VERSION`]);
//! the tests validate every manifest against that version's schema.

pub mod error;
pub mod image;
pub mod manifests;
pub mod memory;
pub mod model;
pub mod names;
pub mod options;
pub mod render;
pub mod secrets;
pub mod yaml;

pub use error::ExportError;
pub use manifests::{export, Export, PoolManifests, Resource};
pub use model::{LocalModels, ModelLookup, NoModels};
pub use options::{ExportOptions, ModelVolume, OutputFormat};
pub use render::{render, render_pool};

/// The Kubernetes version the manifests are built for: the `k8s-openapi` feature enabled in
/// this crate's `Cargo.toml`.
pub const KUBERNETES_VERSION: &str = "1.34";

#[cfg(test)]
mod tests {
    /// The Kubernetes version k8s-openapi was built for (it refuses two at once).
    #[allow(unreachable_code)]
    fn built_for() -> Option<&'static str> {
        k8s_openapi::k8s_if_1_33! { return Some("1.33"); }
        k8s_openapi::k8s_if_1_34! { return Some("1.34"); }
        k8s_openapi::k8s_if_1_35! { return Some("1.35"); }
        k8s_openapi::k8s_if_1_36! { return Some("1.36"); }
        k8s_openapi::k8s_if_1_37! { return Some("1.37"); }
        None
    }

    /// The constant the schema validation uses is the version k8s-openapi was built for.
    #[test]
    fn kubernetes_version_is_the_k8s_openapi_feature() {
        assert_eq!(built_for(), Some(super::KUBERNETES_VERSION));
    }
}
