//! The gpu-check step: the devices every GPU pool names exist on an NVIDIA driver that
//! answers. No CPU fallback: a GPU pool on a host without a driver or without the device fails
//! here, saying what was found and what was asked.
//!
//! Outputs: `gpus`, every GPU found (`{index, uuid, name, memory_total_mib, memory_free_mib,
//! driver, compute_capability}`), for vram-fit. Facts: the identity of each requested device
//! (uuid, name, total memory, driver), not its free memory, so a busy GPU does not dirty the
//! pools that use it.

use provision_executor::{Facts, Outcome, StepContext, StepError};
use provision_plan::outputs::GpuCheckOutputs;
use provision_plan::step::GpuCheck;
use provision_steps_tools::Host;

use crate::detect::{detect, DetectError, Gpu};

fn describe(gpus: &[Gpu]) -> String {
    if gpus.is_empty() {
        return "no GPU".into();
    }
    gpus.iter()
        .map(|g| format!("{} ({}, {} MiB)", g.index, g.name, g.memory_total_mib))
        .collect::<Vec<_>>()
        .join(", ")
}

fn asked(spec: &GpuCheck) -> String {
    let list: Vec<String> = spec.devices.iter().map(u32::to_string).collect();
    format!("the config asks for GPU {}", list.join(", "))
}

/// The detection error as a step error: what was found, what was asked, what to do.
pub fn detect_error(spec: &GpuCheck, e: DetectError) -> StepError {
    let hint = match &e {
        DetectError::Cancelled => return StepError::cancelled(),
        DetectError::NotInstalled => "install the NVIDIA driver (nvidia-smi comes with it), or make the pool `backend: cpu`",
        DetectError::Failed { .. } | DetectError::Timeout { .. } => "the NVIDIA driver is not working: check `nvidia-smi` by hand (a driver/kernel module mismatch after an upgrade needs a reboot)",
        DetectError::Spawn { .. } => "check that nvidia-smi is executable",
        DetectError::Garbage { .. } => "check `nvidia-smi` by hand; provision expects the CSV of `--format=csv,noheader,nounits`",
    };
    let command = e.failed_command();
    let err = StepError::new(format!(
        "GPU check failed: {e}; {}; GPU pools never fall back to the CPU",
        asked(spec)
    ))
    .hint(hint);
    err.with_command(command)
}

/// Detect the GPUs and check that every requested device is there.
pub fn check(
    spec: &GpuCheck,
    host: &Host,
    cancel: &provision_executor::Cancel,
) -> Result<Vec<Gpu>, StepError> {
    let gpus = detect(&spec.argv, host, cancel).map_err(|e| detect_error(spec, e))?;
    let missing: Vec<String> = spec
        .devices
        .iter()
        .filter(|d| !gpus.iter().any(|g| g.index == **d))
        .map(u32::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(StepError::new(format!(
            "GPU check failed: {} but this host has {}: GPU {} does not exist; GPU pools never fall back to the CPU",
            asked(spec),
            describe(&gpus),
            missing.join(", ")
        ))
        .hint("fix `devices` in the config (GPU indices as `nvidia-smi` numbers them)"));
    }
    Ok(gpus)
}

fn identity(g: &Gpu) -> String {
    format!(
        "{} {} {} MiB driver {} cc {}",
        g.uuid, g.name, g.memory_total_mib, g.driver, g.compute_capability
    )
}

/// Facts: `gpu.<index>` → identity of each requested device.
pub fn facts(spec: &GpuCheck, cx: &StepContext<'_>, host: &Host) -> Result<Facts, StepError> {
    let gpus = check(spec, host, &cx.cancel)?;
    Ok(gpus
        .iter()
        .filter(|g| spec.devices.contains(&g.index))
        .map(|g| (format!("gpu.{}", g.index), identity(g)))
        .collect())
}

/// Run gpu-check: output `gpus`.
pub fn run(spec: &GpuCheck, cx: &StepContext<'_>, host: &Host) -> Result<Outcome, StepError> {
    let gpus = check(spec, host, &cx.cancel)?;
    Ok(Outcome::new(GpuCheckOutputs { gpus }))
}

/// Liveness: detect again and compare the requested devices with what the step recorded
/// (`cx.previous`'s `gpus`): same uuid, name, total memory and driver. Free memory may differ.
pub fn check_alive(spec: &GpuCheck, cx: &StepContext<'_>, host: &Host) -> Result<(), String> {
    let recorded = &cx
        .previous::<GpuCheckOutputs>()
        .ok_or("no GPU list was recorded")?
        .gpus;
    let now = check(spec, host, &cx.cancel).map_err(|e| e.message)?;
    for d in &spec.devices {
        let was = recorded.iter().find(|g| g.index == *d);
        let is = now.iter().find(|g| g.index == *d);
        match (was, is) {
            (Some(a), Some(b)) if identity(a) == identity(b) => {}
            (Some(a), Some(b)) => {
                return Err(format!(
                    "GPU {d} changed: was {}, now {}",
                    identity(a),
                    identity(b)
                ))
            }
            (None, _) => return Err(format!("GPU {d} was not recorded")),
            (_, None) => return Err(format!("GPU {d} is gone")),
        }
    }
    Ok(())
}
