//! Steps are data: each kind carries everything `apply` needs to run it (argv, env,
//! directories). Strings may hold placeholders that `apply` fills in:
//! `${cache}`, `${runtime}` and `${config_dir}` (the plan's `roots`), `${port}` (the port
//! chosen for a replica whose port is `auto`), `${model_path}` (the file the model-resolve step
//! produced) and `${jobs}` (the build parallelism). A secret is a `${secret:NAME}` placeholder
//! ([`crate::secret_placeholder`]), its value in the plan's secrets table: a spec never holds
//! one.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{Backend, Engine, SecretRef};
use crate::memory_settings::MemorySettings;
use crate::model_ref::ModelRef;
use crate::step_id::StepId;

/// One node of the plan DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Step {
    /// Stable id derived from what the step is, e.g. `git-clone:llama.cpp@b4567`,
    /// `spawn:pool-a/r0`. Two pools that need the same thing share one step.
    pub id: String,
    /// Steps that must pass before this one starts, sorted.
    pub deps: Vec<String>,
    /// Pools that need this step, sorted.
    pub pools: Vec<String>,
    #[serde(flatten)]
    pub spec: StepSpec,
}

impl Step {
    pub fn kind(&self) -> &'static str {
        self.spec.kind()
    }

    /// Liveness steps check the world every apply; a state file alone never makes them fresh.
    pub fn is_liveness(&self) -> bool {
        self.spec.step_kind().is_liveness()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StepSpec {
    PreflightTools(PreflightTools),
    GpuCheck(GpuCheck),
    GitClone(GitClone),
    CmakeConfigure(CmakeConfigure),
    CmakeBuild(CmakeBuild),
    ModelResolve(ModelResolve),
    VramFit(VramFit),
    Spawn(Spawn),
    Probe(Probe),
    Handoff(Handoff),
}

impl StepSpec {
    /// The kind's name (`spawn`), as in the plan JSON's `kind`.
    pub fn kind(&self) -> &'static str {
        self.step_kind().as_str()
    }
}

/// Check that the tools the plan runs are installed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PreflightTools {
    pub tools: Vec<ToolRequirement>,
    /// Missing tools may be installed with pacman (Arch-like hosts only).
    pub allow_package_installs: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct ToolRequirement {
    /// What is needed, e.g. `C++ compiler`.
    pub name: String,
    /// Commands that satisfy it; the first found on PATH is used.
    pub any_of: Vec<String>,
    /// Why the plan needs it.
    pub needed_for: String,
}

/// Detect NVIDIA GPUs and check that the devices the pools name exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GpuCheck {
    pub devices: Vec<u32>,
    pub argv: Vec<String>,
}

/// Clone (or fetch) a repository into the cache and check out a ref.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GitClone {
    /// Repository URL, its credentials `${secret:repo.userinfo}` (and
    /// `${secret:repo.<parameter>}` for a signed query).
    pub repo: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub submodules: bool,
    /// Checkout directory, owned by provision.
    pub dir: String,
    /// The commands, in order: clone when `dir` is absent, then fetch, checkout and
    /// submodule update.
    pub commands: Vec<Vec<String>>,
}

/// Configure llama.cpp with CMake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CmakeConfigure {
    pub source_dir: String,
    /// Build directory, keyed by the normalised flags: two flag sets never share a cache.
    pub build_dir: String,
    /// CMake generator; absent means Ninja when installed, else Unix Makefiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
    /// Normalised `-D` definitions.
    pub defines: BTreeMap<String, String>,
    /// Other CMake arguments, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// A CUDA build.
    pub cuda: bool,
    /// The configure command (`-G` added at apply when the generator is automatic).
    pub argv: Vec<String>,
}

/// Build the `llama-server` target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CmakeBuild {
    pub build_dir: String,
    pub target: String,
    pub argv: Vec<String>,
    /// The binary the build must produce.
    pub binary: String,
}

/// Make the model file present and verified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelResolve {
    /// The ref as written in the config, credentials redacted.
    #[serde(rename = "ref")]
    pub model_ref: String,
    /// Where the model comes from; a URL's credentials are `${secret:source.userinfo}` and
    /// `${secret:source.<parameter>}` (a signature, a token).
    pub source: ModelRef,
    /// `sha256:<64 hex>` to verify, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// The file, when known before apply (local and cached refs); otherwise `${model_path}`
    /// after resolution (Hugging Face cache layout, or `cache_dir` for URLs).
    pub path: String,
    /// Directory for bare names and URL downloads.
    pub cache_dir: String,
}

/// The query gpu-check and the device ledger ask `nvidia-smi` (`--format=csv,noheader,nounits`).
pub const GPU_QUERY: [&str; 3] = [
    "nvidia-smi",
    "--query-gpu=index,uuid,name,memory.total,memory.free,driver_version,compute_cap",
    "--format=csv,noheader,nounits",
];

/// Check, before anything is spawned, that weights, KV cache and activations of every
/// replica fit in VRAM, beside everything else on its devices: the device ledger. Everything
/// the estimate depends on is here (the planner resolves it from the pool's flags), so a
/// change to any of it checks the fit again; free memory is read on every apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VramFit {
    pub pool: String,
    pub devices: Vec<u32>,
    /// The servers the pool runs on these devices, each its own process.
    #[serde(default = "one")]
    pub replicas: u32,
    /// Its model-resolve step (a dependency): the model's path.
    #[schemars(with = "String")]
    pub model: StepId,
    /// The server's memory-relevant settings.
    #[serde(flatten)]
    pub memory: MemorySettings,
    /// The GPU pools before this one in the config that share a device with it, in config
    /// order: the ledger places them first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placed_before: Vec<LedgerPool>,
}

fn one() -> u32 {
    1
}

/// A GPU pool as the device ledger counts it: its replicas on its devices, each needing what
/// its model and memory settings need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LedgerPool {
    pub pool: String,
    pub devices: Vec<u32>,
    pub replicas: u32,
    /// Its model-resolve step (a dependency of the vram-fit step): the model's path.
    #[schemars(with = "String")]
    pub model: StepId,
    #[serde(flatten)]
    pub memory: MemorySettings,
}

/// The port of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum PortSpec {
    /// The configured port.
    Fixed { port: u16 },
    /// The first free port from `base` at apply time (`${port}`).
    Auto { base: u16 },
}

/// Start one llama-server replica in its own process group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Spawn {
    pub pool: String,
    pub replica: u32,
    /// The engine the server runs (`llamacpp` when absent).
    #[serde(default, skip_serializing_if = "Engine::is_llamacpp")]
    pub engine: Engine,
    pub backend: Backend,
    pub binary: String,
    /// The exact argv (it holds no secret).
    pub argv: Vec<String>,
    /// Flags of `argv` that provision added (`--fit`, `--log-verbosity`, each with its value)
    /// and the spawn drops when the binary does not accept them: older builds lack them and
    /// need none. Absent for a server that gets none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unless_unknown: Vec<String>,
    /// Environment added to the process; a secret value is `${secret:env.NAME}` (`--api-key`
    /// and `--hf-token` reach the server here, as `LLAMA_API_KEY` and `HF_TOKEN`: the argv
    /// never holds a secret, since `/proc/<pid>/cmdline` is readable by every local user, and
    /// the environment only by the server's owner and root).
    pub env: BTreeMap<String, String>,
    pub host: String,
    pub port: PortSpec,
    /// With an automatic port: the ports other replicas of the plan are configured for, which
    /// it never takes. Derived from the plan's other spawn steps (`replica_inputs::link`, to
    /// be run again on a plan read back from JSON) and not part of what the replica is: a
    /// fixed port added elsewhere must not restart every automatic-port server; the spawn's
    /// liveness check restarts, alone, the one whose port another replica now fixes.
    #[serde(skip)]
    #[schemars(skip)]
    pub reserved_ports: BTreeSet<u16>,
    /// The replica's handoff file (placeholders unexpanded): withdrawn before its server
    /// changes, so nobody is sent to it meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_path: Option<String>,
    /// The API key the server requires, by reference; read at apply and given to the server
    /// as `LLAMA_API_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretRef>,
    pub devices: Vec<u32>,
    pub log: String,
    pub pid_file: String,
    /// The certificate and key the server serves HTTPS with (`listen.tls`), also in `argv`;
    /// the binary must support them, and the key file must be private (0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
}

/// A server's certificate and private key files (resolved paths).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TlsFiles {
    pub cert_file: String,
    pub key_file: String,
}

/// Wait until a replica answers `/health` with 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Probe {
    pub pool: String,
    pub replica: u32,
    /// The engine the server runs (`llamacpp` when absent): what its endpoints answer.
    #[serde(default, skip_serializing_if = "Engine::is_llamacpp")]
    pub engine: Engine,
    /// The server's URL; its credentials (an external server's) are `${secret:url.userinfo}`.
    pub url: String,
    pub health_path: String,
    /// `/metrics` must answer 200 too.
    pub metrics: bool,
    pub timeout_ms: u64,
    /// A server provision does not own (mode `external`).
    pub external: bool,
    /// `url` is https and the server must present exactly the leaf certificate of this PEM
    /// file (pinned: the host name is not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_cert: Option<String>,
    /// The replica's handoff file (placeholders unexpanded): withdrawn while the replica is
    /// not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_path: Option<String>,
    /// The API key its server requires, by reference (never the key): read when `/metrics` is
    /// asked. A key the pool gives as a flag or env value is the step's secret `api_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretRef>,
}

/// Tell the orchestrator where the replica runs, written only after the probe passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Handoff {
    pub pool: String,
    pub replica: u32,
    pub path: String,
    pub engine: String,
    pub provisioning_mode: String,
    pub url: String,
    pub model: HandoffModel,
    /// Normalised flags, secrets redacted.
    pub flags: Vec<String>,
    pub devices: Vec<u32>,
    pub backend: Backend,
    /// The authentication the URL needs (`bearer`: `Authorization: Bearer <API key>`); never
    /// the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// The host written into the handoff URL instead of the one probed (`listen.advertise`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// The file is 0640 (its group may read it), not 0600.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub group_readable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HandoffModel {
    pub id: String,
    pub path: String,
}
