//! Concrete ways to make a GPU pool fit, for `POOL_UNAVAILABLE`: never a CPU offload (a GPU
//! pool runs entirely in VRAM or not at all).

use crate::ledger::Entry;

/// The ways, in the order an operator would try them.
pub fn ways_to_fit(own: &Entry, largest: Option<u64>) -> String {
    let mut ways = Vec::new();
    if let Some(c) = largest {
        ways.push(format!("set `ctx: {c}` (or less) on the pool"));
    }
    if !own.input.flash_attn {
        ways.push("turn flash attention on (`--flash-attn on`): no attention scores buffer".into());
    }
    if own.input.kv_bytes_k >= 2.0 || own.input.kv_bytes_v >= 2.0 {
        ways.push(
            "quantise the KV cache (`--cache-type-k q8_0 --cache-type-v q8_0`, needs flash attention for V)"
                .into(),
        );
    }
    if own.replicas > 1 {
        ways.push(format!(
            "run fewer replicas (`replicas: {}`)",
            own.replicas - 1
        ));
    }
    ways.push("add devices to the pool (its layers are split across them; `--tensor-split` sets the shares)".into());
    ways.push("use a smaller quantisation of the model".into());
    ways.push("free the GPUs (the processes named above), or move other pools elsewhere".into());
    ways.join("; ")
}
