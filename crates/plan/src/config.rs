//! The config contract: the shape of llama-orch's `contracts/config-schema::Config`, plus the
//! fields provision needs (`backend`, `replicas`, `binary.path`, `external.url`,
//! `handoff_path`, `readiness_timeout_ms`).
//!
//! Every struct denies unknown fields: a misspelt field is an error, never ignored. The JSON
//! Schema in `schemas/config.schema.json` is generated from these types
//! (`cargo xtask regen-schema`), and validation walks that same schema.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The most pools a config may have. The benchmark plans 10,000.
pub const MAX_POOLS: usize = 10_000;
/// The most replicas (and so ports) a pool may have.
pub const MAX_REPLICAS: u32 = 256;
/// The most devices (and tensor split ratios) a pool may list.
pub const MAX_DEVICES: usize = 256;
/// The most GPU pools that may share one device. Each pool's fit counts the pools before it on
/// its devices (the device ledger), so a plan grows with the square of this per device.
pub const MAX_POOLS_PER_DEVICE: usize = 128;
/// The most items of a pool's `flags`, and of its `cmake_flags`.
pub const MAX_FLAGS: usize = 1_000;

/// A provision config: the pools to bring up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "provision config")]
pub struct Config {
    /// Catalog settings of the orchestrator. Accepted and kept; provision does not use them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<CatalogConfig>,
    /// The pools to provision (at most 10,000).
    #[schemars(length(max = MAX_POOLS))]
    pub pools: Vec<Pool>,
}

/// The inference engine a pool runs. Only `llamacpp` is provisioned today; the others are
/// accepted by the contract and rejected at plan time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Llamacpp,
    Vllm,
    Tgi,
    Triton,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Llamacpp => "llamacpp",
            Engine::Vllm => "vllm",
            Engine::Tgi => "tgi",
            Engine::Triton => "triton",
        }
    }

    /// `llamacpp`, the engine a step spec names by saying none (so plans and state files of
    /// llama.cpp pools read as they did before specs named their engine).
    pub fn is_llamacpp(&self) -> bool {
        *self == Engine::Llamacpp
    }
}

/// Where a pool computes. `cuda` (the default) is a GPU pool: it needs a GPU and never falls
/// back to the CPU. `cpu` is the explicit opt-in to a CPU-only pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Cuda,
    Cpu,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cuda => "cuda",
            Backend::Cpu => "cpu",
        }
    }
}

/// One pool: a model served by one or more replicas of an engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Pool id: letters, digits, `.`, `_` and `-`; used in step ids and file names.
    pub id: String,
    /// Inference engine.
    pub engine: Engine,
    /// Model id announced to the orchestrator. Also the model ref when
    /// `provisioning.model.ref` is absent.
    pub model: String,
    /// GPU indices (as `nvidia-smi` numbers them). Required for a GPU pool.
    #[schemars(length(max = MAX_DEVICES))]
    pub devices: Vec<u32>,
    /// `cuda` (default): GPU pool. `cpu`: explicit CPU-only pool.
    #[serde(default)]
    pub backend: Backend,
    /// Number of server processes for this pool (at most 256).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = MAX_REPLICAS), default = "default_replicas")]
    pub replicas: u32,
    /// Quantisation label (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant: Option<String>,
    /// Context size in tokens; becomes `--ctx-size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ctx: Option<u32>,
    /// Split ratios across `devices`, one per device; becomes `--tensor-split`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DEVICES))]
    pub tensor_split: Option<Vec<f64>>,
    /// Orchestrator field, kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload: Option<bool>,
    /// Orchestrator field, kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_same_engine_version: Option<bool>,
    /// Orchestrator field, kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler_profile_version: Option<String>,
    /// How the engine gets onto the machine.
    #[serde(default)]
    pub provisioning: Provisioning,
    /// Orchestrator field, kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueConfig>,
    /// Orchestrator field, kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionConfig>,
    /// Orchestrator field, kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Where the handoff file goes (default `<runtime>/engines/llamacpp.json` when one replica
    /// is applied, `<runtime>/engines/llamacpp-<pool>-r<N>.json` otherwise). With several
    /// replicas, `-r<N>` is inserted before the extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_path: Option<String>,
    /// Write the handoff file 0640 (readable by its group, e.g. an orchestrator's) instead of
    /// 0600. Only the file: its directory must let that group in (the runtime directory
    /// provision creates is 0700, so point `handoff_path` at a directory of your own).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handoff_group_readable: bool,
    /// How long a replica may take to answer `/health` with 200 after spawn, in milliseconds.
    #[serde(default = "default_readiness_timeout_ms")]
    #[schemars(range(min = 1), default = "default_readiness_timeout_ms")]
    pub readiness_timeout_ms: u64,
    /// Where the replicas listen (default `127.0.0.1`: this host only). An address other
    /// than loopback needs `api_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<Listen>,
    /// The API key every replica requires (`Authorization: Bearer KEY` on everything but
    /// `/health`), by reference: never in the config, the plan or the server's argv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretRef>,
}

/// The address the replicas of a pool bind to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// An IP address: `127.0.0.1` (default), `0.0.0.0` (every interface), or one of this
    /// host's addresses.
    #[serde(default = "default_listen_host")]
    #[schemars(default = "default_listen_host")]
    pub host: String,
    /// The host name or IP address written into the handoff URLs, for an orchestrator on
    /// another host (default: the bound address; 127.0.0.1 for a wildcard bind). Probes still
    /// dial the bound address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Serve HTTPS with this certificate and key (passed to llama-server as
    /// `--ssl-cert-file` / `--ssl-key-file`; the binary must be built with OpenSSL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenTls>,
}

fn default_listen_host() -> String {
    "127.0.0.1".into()
}

/// The certificate and private key a pool's replicas serve HTTPS with. Both are required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenTls {
    /// PEM certificate (chain), leaf first; relative to the config file. Provision's probes
    /// trust exactly this leaf certificate (pinned), whatever host name it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM private key of the certificate; relative to the config file. Must not be readable
    /// or writable by group or others (`chmod 600`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

/// A secret given by reference: read at apply time, never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretRef {
    /// The value of this environment variable of the provision process.
    Env(String),
    /// The contents of this file (trailing newline removed); relative to the config file.
    File(String),
}

pub const DEFAULT_READINESS_TIMEOUT_MS: u64 = 300_000;

fn default_replicas() -> u32 {
    1
}

fn default_readiness_timeout_ms() -> u64 {
    DEFAULT_READINESS_TIMEOUT_MS
}

/// How the engine is provisioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProvisioningMode {
    /// Clone llama.cpp and build `llama-server` with CMake (default).
    #[default]
    Source,
    /// Use a `llama-server` binary already on disk (`binary.path`).
    Binary,
    /// A server provision does not own (`external.url`): probe it and hand it off.
    External,
    /// Not supported yet.
    Container,
    /// Not supported yet.
    Package,
}

impl ProvisioningMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProvisioningMode::Source => "source",
            ProvisioningMode::Binary => "binary",
            ProvisioningMode::External => "external",
            ProvisioningMode::Container => "container",
            ProvisioningMode::Package => "package",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provisioning {
    /// `source` (default), `binary`, `external`; `container` and `package` are not supported yet.
    #[serde(default)]
    pub mode: ProvisioningMode,
    /// Allow installing missing tools with pacman (Arch-like hosts only).
    #[serde(default)]
    pub allow_package_installs: bool,
    /// Allow downloading engine binaries.
    #[serde(default)]
    pub allow_binary_downloads: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<BinaryConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelConfig>,
    /// One port per replica; empty means the first free ports from 8080.
    #[serde(default)]
    #[schemars(length(max = MAX_REPLICAS))]
    pub ports: Vec<Port>,
    /// Environment of the server processes.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names in `env` whose values are secrets besides those whose name contains `TOKEN`,
    /// `KEY`, `SECRET`, `PASS`, `AUTH` or `CREDENTIAL` (any case): shown as `<redacted>` in
    /// plans, state, logs and errors, and taken from a Secret by the Kubernetes export.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<String>,
    /// llama-server flags. Normalised: aliases canonicalised, duplicates last-wins,
    /// deterministic defaults added. `--host`, `--port` and `--model` belong to provision.
    /// At most 1,000 items.
    #[serde(default)]
    #[schemars(length(max = MAX_FLAGS))]
    pub flags: Vec<String>,
}

/// A TCP port, 1–65535.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct Port(#[schemars(range(min = 1, max = 65535))] pub u32);

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Git URL (`https://`, `ssh://`, `git@host:path`, `file://`) or absolute path.
    #[serde(default)]
    pub repo: String,
    /// Tag, branch or commit SHA.
    #[serde(default, rename = "ref")]
    pub git_ref: String,
    /// Update submodules after checkout.
    #[serde(default)]
    pub submodules: bool,
    #[serde(default)]
    pub build: BuildConfig,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// CMake arguments, `-DNAME=VALUE`. Normalised (see README).
    #[serde(default)]
    #[schemars(length(max = MAX_FLAGS))]
    pub cmake_flags: Vec<String>,
    /// CMake generator; default Ninja when installed, else Unix Makefiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
    /// Where sources and builds are cached (default: the provision cache root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BinaryConfig {
    /// A `llama-server` binary already on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Download URL (not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `sha256:<64 hex>` of the binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_dir: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    /// Base URL of a running llama-server that provision does not own.
    #[serde(default)]
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `PATH`, `file:PATH`, `hf:ORG/REPO/FILE.gguf[@REV]`, `https://…`, or a bare file name
    /// looked up in `cache_dir`.
    #[serde(default, rename = "ref")]
    pub model_ref: String,
    /// Directory for bare names and URL downloads (default `<cache>/models`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
    /// `sha256:<64 hex>` of the GGUF file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

// ---- Orchestrator fields (llama-orch), accepted and kept -------------------------------------

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// `reject` or `drop-lru`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_policy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityClass {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_capacity: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_rps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priorities: Option<Vec<PriorityClass>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_policy: Option<TrustPolicyConfig>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_registries: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_signature: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_sbom: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_roots: Option<Vec<String>>,
}

/// The JSON Schema of [`Config`], as written to `schemas/config.schema.json`.
pub fn config_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Config)).expect("schema serialises")
}
