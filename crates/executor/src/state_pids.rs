//! A state file that records a pid or process group of 0, 1 (or one out of range) is corrupt:
//! no process provision starts has such a pid, and signalling it would reach every process the
//! user may signal (`kill(-1)`) or provision's own group (`0`). Checked generically on every
//! step's `pid` and `pgid` outputs, whatever the step kind.

use serde_json::Value;

use crate::pidfd::valid_pid;
use crate::state::State;

/// The output keys that name a process.
const PID_KEYS: [&str; 2] = ["pid", "pgid"];

/// `Err` names the first step with an impossible pid, the key and the value.
pub fn check_pids(state: &State) -> Result<(), String> {
    for (id, record) in &state.steps {
        for key in PID_KEYS {
            let Some(value) = record.outputs.get(key) else {
                continue;
            };
            if value.is_null() || value.as_u64().is_some_and(valid_pid) {
                continue;
            }
            return Err(format!(
                "step `{id}` records {key} {}, which no process provision starts can have \
                 (0 and 1 would signal provision's own group or every process)",
                shown(value)
            ));
        }
    }
    Ok(())
}

fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{StepRecord, StepStatus};
    use serde_json::json;

    fn state_with(outputs: Value) -> State {
        let mut state = State::default();
        state.steps.insert(
            "spawn:a/r0".into(),
            StepRecord {
                kind: "spawn".into(),
                status: StepStatus::Passed,
                fingerprint: None,
                spec: json!({}),
                facts: Default::default(),
                deps: Default::default(),
                outputs: serde_json::from_value(outputs).unwrap(),
                artifacts: vec![],
                started_at: None,
                finished_at: None,
                duration_ms: None,
                reason: None,
                error: None,
            },
        );
        state
    }

    #[test]
    fn pids_0_1_negative_huge_and_non_numbers_are_corrupt() {
        for (key, bad) in [
            ("pid", json!(1)),
            ("pid", json!(0)),
            ("pgid", json!(1)),
            ("pgid", json!(0)),
            ("pid", json!(-1)),
            ("pid", json!(4_294_967_295u64)),
            ("pid", json!("12")),
            ("pgid", json!(1.5)),
        ] {
            let err = check_pids(&state_with(json!({ key: bad }))).unwrap_err();
            assert!(
                err.contains("step `spawn:a/r0`") && err.contains(&format!("{key} {bad}")),
                "{err}"
            );
        }
    }

    #[test]
    fn real_pids_and_absent_keys_pass() {
        assert!(check_pids(&state_with(json!({"pid": 4242, "pgid": 4242}))).is_ok());
        assert!(check_pids(&state_with(json!({"port": 1}))).is_ok());
        assert!(check_pids(&state_with(json!({"pid": null}))).is_ok());
        assert!(check_pids(&State::default()).is_ok());
    }
}
