//! Spawn, readiness probe, handoff and stop of llama-server replicas. Not written yet; see the
//! README's status table.
