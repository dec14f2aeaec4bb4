//! The device ledger: every GPU pool of the config that shares a device with a pool, placed in
//! config order on what the devices have, so replicas and pools on one device add up.
//!
//! Per device, what the config's pools may use is the free memory now plus what this
//! project's running servers of those pools hold (they are kept or replaced, so their memory
//! is theirs again: a re-apply does not count a server twice). Each pool needs, on each of
//! its devices, its replicas × what one server needs there (every replica is its own process,
//! with its own CUDA context and buffers). A pool is placed when every one of its devices has
//! that left; otherwise it takes nothing, and its running servers stay where they are: their
//! memory is then no longer free for the pools before it (only for their own pool), and the
//! placement is worked out again until no such pool is left. So an earlier pool never takes
//! the memory of a later pool's running servers unless that pool still fits after it.
//! Other processes (other tenants, other projects) are already outside the free memory; they
//! are listed so a refusal can name them.

use std::collections::{BTreeMap, BTreeSet};

use provision_plan::outputs::{ComputeApp, Gpu, LedgerDevice, LedgerShare};

use crate::estimate::{estimate, Estimate, FitInput, MIB};
use crate::model_info::ModelInfo;

/// One pool as the ledger counts it.
pub struct Entry {
    pub pool: String,
    pub devices: Vec<u32>,
    pub replicas: u32,
    pub model: ModelInfo,
    pub input: FitInput,
}

/// Where the pools went.
pub struct Placement {
    /// Per entry: its estimate (each device's `free` is what was left for it) and whether it
    /// was placed.
    pub pools: Vec<(Estimate, bool)>,
    /// Every device of the entries.
    pub devices: Vec<LedgerDevice>,
}

/// The pool of a replica name (`pool/rN`); none for a name no replica has.
fn pool_of(replica: &str) -> Option<String> {
    provision_plan::ReplicaId::parse(replica).map(|r| r.pool)
}

/// One device as read: the GPU, and what this project's servers of each counted pool hold.
struct Device<'a> {
    gpu: &'a Gpu,
    theirs: BTreeMap<&'a str, u64>,
    apps: Vec<&'a ComputeApp>,
}

/// Place `entries` (config order) on the GPUs as read (`gpus`, `apps`); `Err` when an entry
/// names a device that is not there.
pub fn place(entries: &[Entry], gpus: &[Gpu], apps: &[ComputeApp]) -> Result<Placement, String> {
    let counted: BTreeSet<&str> = entries.iter().map(|e| e.pool.as_str()).collect();
    let indices: BTreeSet<u32> = entries
        .iter()
        .flat_map(|e| e.devices.iter().copied())
        .collect();
    let mut devices: BTreeMap<u32, Device<'_>> = BTreeMap::new();
    for d in indices {
        let gpu = gpus
            .iter()
            .find(|g| g.index == d)
            .ok_or_else(|| format!("nvidia-smi lists no GPU {d}"))?;
        let on: Vec<&ComputeApp> = apps.iter().filter(|a| a.gpu_uuid == gpu.uuid).collect();
        let mut theirs = BTreeMap::new();
        for a in &on {
            let Some(pool) = a.replica.as_deref().and_then(pool_of) else {
                continue;
            };
            if let Some(&p) = counted.get(pool.as_str()) {
                *theirs.entry(p).or_insert(0) += a.used_memory_mib.unwrap_or(0) * MIB;
            }
        }
        devices.insert(
            d,
            Device {
                gpu,
                theirs,
                apps: on,
            },
        );
    }
    let mut staying: BTreeSet<&str> = BTreeSet::new();
    loop {
        let (pools, left) = walk(entries, &devices, &staying);
        let newly: Vec<&str> = entries
            .iter()
            .zip(&pools)
            .filter(|(e, (_, placed))| !placed && !staying.contains(e.pool.as_str()))
            .map(|(e, _)| e.pool.as_str())
            .filter(|p| devices.values().any(|d| d.theirs.contains_key(p)))
            .collect();
        if newly.is_empty() {
            let devices = ledger(entries, &devices, &staying, &pools, &left);
            return Ok(Placement { pools, devices });
        }
        staying.extend(newly);
    }
}

/// What the counted pools may use on a device: free, plus what their servers hold unless
/// they stay.
fn available(d: &Device<'_>, staying: &BTreeSet<&str>) -> u64 {
    let theirs: u64 = d
        .theirs
        .iter()
        .filter(|(p, _)| !staying.contains(*p))
        .map(|(_, b)| b)
        .sum();
    d.gpu.memory_free_mib * MIB + theirs
}

/// One pass in config order: each entry's estimate and whether it was placed, and what is
/// left on each device (negative: short).
fn walk(
    entries: &[Entry],
    devices: &BTreeMap<u32, Device<'_>>,
    staying: &BTreeSet<&str>,
) -> (Vec<(Estimate, bool)>, BTreeMap<u32, i128>) {
    let mut left: BTreeMap<u32, i128> = devices
        .iter()
        .map(|(&i, d)| (i, i128::from(available(d, staying))))
        .collect();
    let mut pools = Vec::with_capacity(entries.len());
    for e in entries {
        // A pool whose servers stay has their memory for itself, not for the pools before it.
        let own = |d: u32| -> i128 {
            if staying.contains(e.pool.as_str()) {
                i128::from(
                    devices[&d]
                        .theirs
                        .get(e.pool.as_str())
                        .copied()
                        .unwrap_or(0),
                )
            } else {
                0
            }
        };
        let room = |d: u32| left[&d] + own(d);
        let free: Vec<(u32, u64)> = e
            .devices
            .iter()
            .map(|&d| (d, u64::try_from(room(d).max(0)).unwrap_or(u64::MAX)))
            .collect();
        let est = estimate(&e.model, &e.input, &free);
        let n = i128::from(e.replicas.max(1));
        let placed = est
            .devices
            .iter()
            .all(|d| i128::from(d.need) * n <= room(d.device));
        if placed {
            for d in &est.devices {
                let gain = own(d.device);
                *left.get_mut(&d.device).expect("a device of the entry") +=
                    gain - i128::from(d.need) * n;
            }
        }
        pools.push((est, placed));
    }
    (pools, left)
}

/// The ledger as recorded: each device, what is on it, each pool's share.
fn ledger(
    entries: &[Entry],
    devices: &BTreeMap<u32, Device<'_>>,
    staying: &BTreeSet<&str>,
    pools: &[(Estimate, bool)],
    left: &BTreeMap<u32, i128>,
) -> Vec<LedgerDevice> {
    devices
        .iter()
        .map(|(&i, d)| {
            let others = d
                .apps
                .iter()
                .filter(|a| {
                    a.replica.as_deref().and_then(pool_of).is_none_or(|p| {
                        !d.theirs.contains_key(p.as_str()) || staying.contains(p.as_str())
                    })
                })
                .map(|a| (*a).clone())
                .collect();
            let shares = entries
                .iter()
                .zip(pools)
                .filter_map(|(e, (est, placed))| {
                    let need = est.devices.iter().find(|x| x.device == i)?.need;
                    Some(LedgerShare {
                        pool: e.pool.clone(),
                        replicas: e.replicas,
                        per_replica: need,
                        total: need * u64::from(e.replicas.max(1)),
                        placed: *placed,
                    })
                })
                .collect();
            LedgerDevice {
                device: i,
                uuid: d.gpu.uuid.clone(),
                name: d.gpu.name.clone(),
                total: d.gpu.memory_total_mib * MIB,
                free: d.gpu.memory_free_mib * MIB,
                theirs: available(d, staying) - d.gpu.memory_free_mib * MIB,
                others,
                shares,
                left: i64::try_from(left[&i]).unwrap_or(i64::MIN),
            }
        })
        .collect()
}
