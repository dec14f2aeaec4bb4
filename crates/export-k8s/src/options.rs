//! What the command line can change about the manifests. Everything else comes from the config.

use crate::error::ExportError;
use crate::names::{is_dns1123_label, is_dns1123_subdomain, is_quantity};

/// Where a pool's model comes from inside the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelVolume {
    /// A PersistentVolumeClaim mounted at `/models` (default). For `hf:` and `https://` refs an
    /// init container downloads the model onto the claim when it is missing, verifying its
    /// sha256; local files must be copied onto the claim.
    #[default]
    Pvc,
    /// A directory on the node (`hostPath`), read-only: single-node clusters.
    HostPath,
    /// An `emptyDir` per pod that an init container downloads the model into, verifying its
    /// sha256 (`hf:` and `https://` refs only).
    Download,
}

impl ModelVolume {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelVolume::Pvc => "pvc",
            ModelVolume::HostPath => "host-path",
            ModelVolume::Download => "download",
        }
    }
}

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Multi-document YAML, `---` between documents.
    #[default]
    Yaml,
    /// One JSON `List` (`apiVersion: v1, kind: List, items: […]`).
    Json,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Yaml => "yaml",
            OutputFormat::Json => "json",
        }
    }
}

/// Export options; [`Default`] is what the command does without flags.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Only this pool.
    pub pool: Option<String>,
    /// `metadata.namespace` of every object; absent: the namespace `kubectl` is pointed at.
    pub namespace: Option<String>,
    /// The llama-server image for every pool [default: ggml-org's server image, CUDA for GPU
    /// pools, tagged with the source ref when it is a llama.cpp release `bNNNN`].
    pub image: Option<String>,
    pub model_volume: ModelVolume,
    /// The claim holding the models (pvc) [default: `<pool>-models`, one per pool].
    pub model_claim: Option<String>,
    /// Also write the claim(s), of this size (a Kubernetes quantity, e.g. `20Gi`).
    pub create_pvc: Option<String>,
    /// `storageClassName` of created claims.
    pub storage_class: Option<String>,
    /// The node directory holding the model files (host-path) [default: the directory of a
    /// path ref].
    pub model_dir: Option<String>,
    /// `maxSurge` of the rolling update (0: a replica is stopped before its successor starts,
    /// so an update never needs more GPUs than the pool has).
    pub max_surge: u32,
    /// The Secret holding secret flags and env values [default: `<pool>-secrets`].
    pub secret: Option<String>,
}

/// Options that name invalid Kubernetes objects, or that do not go together, are a usage
/// error.
pub(crate) fn check_options(opts: &ExportOptions) -> Result<(), ExportError> {
    let name = |what: &str, value: &Option<String>, ok: fn(&str) -> bool, help: &str| match value {
        Some(v) if !ok(v) => Err(ExportError::usage(
            format!("{what} `{v}` is not a valid Kubernetes name"),
            help,
        )),
        _ => Ok(()),
    };
    let subdomain =
        "use lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit";
    name(
        "--namespace",
        &opts.namespace,
        is_dns1123_label,
        "use up to 63 lower-case letters, digits and `-`, starting and ending with a letter or digit",
    )?;
    name(
        "--model-claim",
        &opts.model_claim,
        is_dns1123_subdomain,
        subdomain,
    )?;
    name("--secret", &opts.secret, is_dns1123_subdomain, subdomain)?;
    name(
        "--storage-class",
        &opts.storage_class,
        is_dns1123_subdomain,
        subdomain,
    )?;
    if let Some(size) = &opts.create_pvc {
        if !is_quantity(size) {
            return Err(ExportError::usage(
                format!("--create-pvc `{size}` is not a Kubernetes quantity"),
                "write a size such as `20Gi` or `500Mi`",
            ));
        }
    }
    if opts.model_volume != ModelVolume::Pvc
        && (opts.create_pvc.is_some() || opts.model_claim.is_some())
    {
        return Err(ExportError::usage(
            format!(
                "--create-pvc and --model-claim need `--model-volume pvc`, not `{}`",
                opts.model_volume.as_str()
            ),
            "drop them, or use `--model-volume pvc`",
        ));
    }
    if opts.model_dir.is_some() && opts.model_volume != ModelVolume::HostPath {
        return Err(ExportError::usage(
            "--model-dir needs `--model-volume host-path`",
            "add `--model-volume host-path`, or drop --model-dir",
        ));
    }
    if opts.max_surge > i32::MAX as u32 {
        return Err(ExportError::usage("--max-surge is too large", "use 0 or 1"));
    }
    Ok(())
}
