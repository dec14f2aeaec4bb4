//! The device ledger stays bounded: at most `MAX_POOLS_PER_DEVICE` GPU pools share a device,
//! and a vram-fit names only the pools that share a device with it, so a chain of pools each
//! sharing one card with the next plans in size linear in its length (the first version named
//! every pool connected through shared devices: 2,000 pools on one card planned to 1 GB).

use provision_plan::config::MAX_POOLS_PER_DEVICE;
use provision_plan::{Document, PlanOptions, Roots, StepSpec};

fn gpu_pool(id: &str, devices: &str) -> String {
    format!(
        "  - id: {id}
    engine: llamacpp
    model: m
    devices: {devices}
    ctx: 2048
    provisioning:
      mode: binary
      binary: {{path: /opt/llama/llama-server}}
      model: {{ref: ./m.gguf}}
"
    )
}

fn plan(pools: &str) -> Result<provision_plan::Plan, String> {
    let doc =
        Document::parse("pools.yaml", format!("pools:\n{pools}")).map_err(|e| e.to_string())?;
    let valid = provision_plan::validate(&doc).map_err(|e| e.to_string())?;
    let roots = Roots {
        cache: "/cache".into(),
        runtime: "/rt".into(),
        config_dir: "/cfg".into(),
    };
    provision_plan::plan(&valid, &PlanOptions { roots, pool: None }).map_err(|e| e.to_string())
}

#[test]
fn more_gpu_pools_on_one_device_than_the_cap_are_refused_at_the_first_past_it() {
    let pools: String = (0..=MAX_POOLS_PER_DEVICE)
        .map(|i| gpu_pool(&format!("p{i}"), "[0]"))
        .collect();
    let err = plan(&pools).unwrap_err();
    assert!(
        err.contains(&format!("pools[{MAX_POOLS_PER_DEVICE}].devices[0]")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "at most {MAX_POOLS_PER_DEVICE} may share one device"
        )),
        "{err}"
    );
    // At the cap: planned, each fit naming the pools before it on the card.
    let at_cap: String = (0..MAX_POOLS_PER_DEVICE)
        .map(|i| gpu_pool(&format!("p{i}"), "[0]"))
        .collect();
    let p = plan(&at_cap).unwrap();
    let last = p
        .steps
        .iter()
        .find_map(|s| match &s.spec {
            StepSpec::VramFit(v) if v.pool == format!("p{}", MAX_POOLS_PER_DEVICE - 1) => Some(v),
            _ => None,
        })
        .unwrap();
    assert_eq!(last.placed_before.len(), MAX_POOLS_PER_DEVICE - 1);
}

#[test]
fn a_chain_of_pools_sharing_one_card_each_plans_in_linear_size() {
    // Pool i on cards i and i+1: each shares a card with the one before and the one after.
    let size = |n: usize| {
        let pools: String = (0..n)
            .map(|i| gpu_pool(&format!("p{i}"), &format!("[{}, {}]", i % 250, i % 250 + 1)))
            .collect();
        let p = plan(&pools).unwrap();
        for s in &p.steps {
            if let StepSpec::VramFit(v) = &s.spec {
                assert!(
                    v.placed_before.len() <= 2,
                    "{}: {}",
                    v.pool,
                    v.placed_before.len()
                );
            }
        }
        p.to_json().len()
    };
    let (small, large) = (size(100), size(200));
    let growth = large as f64 / small as f64;
    assert!(
        growth < 2.3,
        "twice the pools, {growth:.2}× the plan ({small} → {large} bytes)"
    );
}
