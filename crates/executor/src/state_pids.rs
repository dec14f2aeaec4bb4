//! A state file that records a pid or process group of 0 or 1 is corrupt: no process
//! provision starts has such a pid, and signalling it would reach every process the user may
//! signal (`kill(-1)`) or provision's own group (`0`). Checked on every pid the typed outputs
//! name ([`provision_plan::StepOutputs::pids`]), whatever the step kind; a pid out of range
//! or not a number does not even read as typed outputs.

use crate::pidfd::valid_pid;
use crate::state::State;

/// `Err` names the first step with an impossible pid, the field and the value.
pub fn check_pids(state: &State) -> Result<(), String> {
    for (id, record) in &state.steps {
        let Some(outputs) = &record.outputs else {
            continue;
        };
        for (key, pid) in outputs.pids() {
            if valid_pid(u64::from(pid)) {
                continue;
            }
            return Err(format!(
                "step `{id}` records {key} {pid}, which no process provision starts can have \
                 (0 and 1 would signal provision's own group or every process)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateFile;
    use serde_json::{json, Value};

    /// A state file with one spawn record whose outputs are `spawn` with `key` set to `value`.
    fn load_with(key: &str, value: Value) -> Result<State, String> {
        let mut outputs = json!({
            "kind": "spawn", "pid": 4242, "pgid": 4242, "start_time": 1, "boot_id": "b",
            "port": 8080, "host": "127.0.0.1", "url": "http://127.0.0.1:8080", "log": "l",
            "pid_file": "p", "binary": "b", "binary_digest": "sha256:0", "backend": "cpu",
            "devices": [], "started_at": "t"
        });
        outputs[key] = value;
        let state = json!({"state_version": 2, "steps": {"spawn:a/r0": {
            "kind": "spawn", "status": "passed", "spec": {}, "outputs": outputs}}});
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, state.to_string()).unwrap();
        StateFile::new(path).load().map_err(|e| e.to_string())
    }

    #[test]
    fn pids_0_1_negative_huge_and_non_numbers_are_corrupt() {
        for (key, bad) in [
            ("pid", json!(1)),
            ("pid", json!(0)),
            ("pgid", json!(1)),
            ("pgid", json!(0)),
            ("pid", json!(4_294_967_295u64)),
        ] {
            let err = load_with(key, bad.clone()).unwrap_err();
            assert!(
                err.contains("step `spawn:a/r0`") && err.contains(&format!("{key} {bad}")),
                "{err}"
            );
        }
        for (key, bad) in [
            ("pid", json!(-1)),
            ("pid", json!(4_294_967_296u64)),
            ("pid", json!("12")),
            ("pgid", json!(1.5)),
        ] {
            let err = load_with(key, bad).unwrap_err();
            assert!(err.contains("unreadable"), "{err}");
        }
    }

    #[test]
    fn real_pids_pass() {
        assert!(load_with("pid", json!(4243)).is_ok());
        assert!(check_pids(&State::default()).is_ok());
    }
}
