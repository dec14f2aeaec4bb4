//! What the GPUs hold now, for the vram-fit steps: `nvidia-smi`'s GPU list and compute
//! processes, each process that is a server of this project named by its replica (its
//! marker). Read once for the steps of one apply that ask at about the same time, so every
//! pool is placed on the same reading; read again after [`FRESH_FOR`] (supervise applies
//! again and again with one dispatcher).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use provision_executor::{Cancel, StepError};
use provision_plan::outputs::ComputeApp;
use provision_steps_model::vram_fit::Reading;
use provision_steps_spawn::identity;
use provision_steps_tools::Host;

/// How long a reading serves further steps.
pub const FRESH_FOR: Duration = Duration::from_secs(2);

/// The last reading and when it was taken, and the replicas whose recorded servers were
/// alive when the apply began.
#[derive(Default)]
pub struct GpuReadings {
    last: Mutex<Option<(Instant, String, Reading)>>,
    alive: std::collections::BTreeSet<String>,
}

impl GpuReadings {
    /// Readings for an apply over `state`: its spawn records' servers that are alive now
    /// count as running, also where the driver's pids are of another PID namespace.
    pub fn over(state: &provision_executor::State) -> GpuReadings {
        let alive = state
            .steps
            .iter()
            .filter_map(|(id, r)| {
                let replica = provision_plan::StepId::parse(id)?.replica()?.to_string();
                let server = provision_steps_spawn::ServerHandle::of_outputs(r.outputs.as_ref()?)?;
                (server.local().is_some() && server.check().is_ok()).then_some(replica)
            })
            .collect();
        GpuReadings {
            last: Mutex::default(),
            alive,
        }
    }

    /// A reading no older than [`FRESH_FOR`] for runtime dir `runtime`.
    pub fn get(&self, host: &Host, runtime: &str, cancel: &Cancel) -> Result<Reading, StepError> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, rt, r)) = last.as_ref() {
            if at.elapsed() < FRESH_FOR && rt == runtime {
                return Ok(r.clone());
            }
        }
        let mut reading = read(host, runtime, cancel)?;
        reading.alive = self.alive.clone();
        *last = Some((Instant::now(), runtime.to_string(), reading.clone()));
        Ok(reading)
    }
}

/// Read the GPUs and their processes now.
fn read(host: &Host, runtime: &str, cancel: &Cancel) -> Result<Reading, StepError> {
    let argv: Vec<String> = provision_plan::step::GPU_QUERY.map(String::from).to_vec();
    let failed = |e: provision_steps_gpu::DetectError| {
        StepError::new(format!("reading the GPUs' free memory failed: {e}"))
            .hint("check `nvidia-smi` by hand")
            .with_command(e.failed_command())
    };
    let gpus = provision_steps_gpu::detect(&argv, host, cancel).map_err(failed)?;
    let mut apps = provision_steps_gpu::compute_apps(host, cancel).map_err(failed)?;
    let ours = format!("{}/", identity::runtime_id(runtime));
    for a in &mut apps {
        name_replica(a, &ours);
    }
    Ok(Reading {
        gpus,
        apps,
        alive: Default::default(),
    })
}

/// Name the replica of a process whose marker says it is a server of this project.
fn name_replica(app: &mut ComputeApp, ours: &str) {
    app.replica =
        identity::marker_of(app.pid).and_then(|m| m.strip_prefix(ours).map(str::to_string));
}
