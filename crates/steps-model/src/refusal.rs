//! `POOL_UNAVAILABLE`: why a GPU pool does not fit, said per device — what is free, what this
//! project's servers there hold, the other processes, each pool sharing the device and its
//! share, and what one of this pool's servers needs — with the largest context that would fit
//! and the concrete ways to make it fit.

use provision_executor::StepError;
use provision_plan::outputs::LedgerDevice;

use crate::estimate::{estimate, human, largest_fitting_ctx, Estimate, FitInput};
use crate::ledger::Entry;

/// A line per other process: `pid 4242 14.00 GiB` (`? MiB` when the driver does not say).
fn others(d: &LedgerDevice) -> String {
    if d.others.is_empty() {
        return "none".into();
    }
    d.others
        .iter()
        .map(|a| {
            let used = a
                .used_memory_mib
                .map_or("unknown".into(), |m| human(m * crate::estimate::MIB));
            match &a.replica {
                Some(r) => format!("pid {} {used} (this project's `{r}`, staying)", a.pid),
                None => format!("pid {} {used}", a.pid),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lines of one device.
fn device_lines(own: &Entry, est: &Estimate, d: &LedgerDevice) -> Vec<String> {
    let mut lines = vec![format!(
        "  GPU {} ({}, {}): {} of {} free now{}; other processes: {}",
        d.device,
        d.name,
        d.uuid,
        human(d.free),
        human(d.total),
        if d.theirs > 0 {
            format!(
                ", + {} held by this project's servers of these pools",
                human(d.theirs)
            )
        } else {
            String::new()
        },
        others(d)
    )];
    for s in &d.shares {
        let mark = if s.pool == own.pool {
            "  <- this pool"
        } else if s.placed {
            ""
        } else {
            "  (does not fit either)"
        };
        lines.push(format!(
            "    pool `{}`: {} replica{} × {} = {}{mark}",
            s.pool,
            s.replicas,
            if s.replicas == 1 { "" } else { "s" },
            human(s.per_replica),
            human(s.total)
        ));
    }
    if let Some(n) = est.devices.iter().find(|x| x.device == d.device) {
        lines.push(format!(
            "    one server of `{}` here: weights {}, KV cache {}, compute {}, margin {} ({} layers{})",
            own.pool,
            human(n.weights),
            human(n.kv_cache),
            human(n.compute),
            human(n.margin),
            n.layers,
            if n.output_layer { " + output" } else { "" }
        ));
    }
    // What the pool lacks here: its share beyond what the pools before it left.
    let share = d.shares.iter().find(|s| s.pool == own.pool);
    let short = share.map_or(0, |s| i128::from(s.total) - i128::from(d.left.max(0)));
    lines.push(if short > 0 {
        format!(
            "    left by the pools before it: {}; short by {}",
            human(d.left.max(0).unsigned_abs()),
            human(u64::try_from(short).unwrap_or(u64::MAX))
        )
    } else {
        format!(
            "    left: {} (enough here)",
            human(d.left.max(0).unsigned_abs())
        )
    });
    lines
}

/// Why not even the smallest context fits one server of `own` in `room` (per device): the
/// weights alone, or what one server needs at ctx 256 (weights, compute buffers, margin).
fn none_fits(own: &Entry, room: &[(u32, u64)]) -> String {
    let room_of = |device: u32| room.iter().find(|r| r.0 == device).map_or(0, |r| r.1);
    let small = FitInput {
        ctx: 256,
        ..own.input.clone()
    };
    let est = estimate(&own.model, &small, room);
    if let Some(d) = est.devices.iter().find(|d| d.weights > room_of(d.device)) {
        return format!(
            "the weights alone do not fit (GPU {}: {} of weights, {} left for one server)",
            d.device,
            human(d.weights),
            human(room_of(d.device))
        );
    }
    let Some(d) = est.devices.iter().find(|d| d.need > room_of(d.device)) else {
        return "not even 256 tokens".into();
    };
    format!(
        "not even 256 tokens: one server needs {} on GPU {} at ctx 256 (weights {}, compute {}, margin {}), {} is left for one server",
        human(d.need),
        d.device,
        human(d.weights),
        human(d.compute),
        human(d.margin),
        human(room_of(d.device))
    )
}

/// The `POOL_UNAVAILABLE` error for `own` (estimated `est`) on the ledger `devices`.
pub fn unavailable(own: &Entry, est: &Estimate, devices: &[LedgerDevice]) -> StepError {
    let replicas = own.replicas.max(1);
    let mut lines = vec![format!(
        "POOL_UNAVAILABLE: pool `{}` ({} replica{}) does not fit in the free VRAM of its GPUs at ctx {}, beside what else is on them",
        own.pool,
        replicas,
        if replicas == 1 { "" } else { "s" },
        est.ctx
    )];
    for d in devices.iter().filter(|d| own.devices.contains(&d.device)) {
        lines.extend(device_lines(own, est, d));
    }
    // What one server of this pool could have, were it alone with what it found.
    let room: Vec<(u32, u64)> = est
        .devices
        .iter()
        .map(|d| (d.device, d.free / u64::from(replicas)))
        .collect();
    let largest = largest_fitting_ctx(&own.model, &own.input, &room);
    lines.push(match largest {
        Some(c) => format!("  largest ctx that fits: {c}"),
        None => format!("  largest ctx that fits: none — {}", none_fits(own, &room)),
    });
    StepError::new(lines.join("\n")).hint(crate::hints::ways_to_fit(own, largest))
}
