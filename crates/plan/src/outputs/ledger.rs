//! The device ledger a vram-fit step records: per GPU, what is on it now and what the pools
//! of the config that share it take, in config order.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A process using GPU memory, as `nvidia-smi --query-compute-apps` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ComputeApp {
    pub pid: u32,
    pub gpu_uuid: String,
    /// MiB; `None` when the driver does not say (`[N/A]`, `[Not Supported]`).
    pub used_memory_mib: Option<u64>,
    /// The replica (`pool/rN`) when the process is a server of this project (its marker
    /// says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// One GPU in the ledger. Bytes throughout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LedgerDevice {
    /// The index as `nvidia-smi` numbers it.
    pub device: u32,
    pub uuid: String,
    pub name: String,
    pub total: u64,
    /// Free now, as the driver says.
    pub free: u64,
    /// Held now by this project's servers of the pools counted here, which are kept or
    /// replaced: theirs again, so a re-apply does not count a server twice.
    pub theirs: u64,
    /// Every other process on the device (other tenants, other projects, this project's
    /// servers that stay where they are).
    pub others: Vec<ComputeApp>,
    /// Each pool counted on the device, in config order.
    pub shares: Vec<LedgerShare>,
    /// free + theirs − the shares placed: what is left (negative: short).
    pub left: i64,
}

/// What one pool takes on one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LedgerShare {
    pub pool: String,
    pub replicas: u32,
    /// What each replica's server needs there (the estimate's `need`).
    pub per_replica: u64,
    /// `replicas × per_replica`.
    pub total: u64,
    /// Whether the pool fits beside the pools before it (a pool that does not takes nothing).
    pub placed: bool,
}
