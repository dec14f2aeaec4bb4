//! What `provision status` reports: each pool's replicas as the state file records them,
//! checked against the world and the config, and the steps an apply would run. `status
//! --format json` is its serialisation ([`status_schema`], schemas/status.schema.json).
//! Fields are declared in alphabetical order: the order `status` printed them in before the
//! report was a type.

use std::collections::BTreeMap;

use provision_plan::outputs::DeviceMemory;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `provision status --format json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    /// Every pool of the plan (only `--pool`'s when given), in config order.
    pub pools: Vec<PoolStatus>,
    /// The state file read.
    pub state: String,
    /// The ids of the steps an apply would run now, in plan order.
    pub steps_to_run: Vec<String>,
}

/// One pool's replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolStatus {
    /// The pool's id.
    pub pool: String,
    /// Its replicas, `r0` first.
    pub replicas: Vec<ReplicaStatus>,
}

/// One replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplicaStatus {
    /// Why its spawn, probe or handoff step would run again (`<step id>: <reason>`); empty
    /// when it matches the config and the world.
    pub drift: Vec<String>,
    /// No step of the replica would run again.
    pub matches_config: bool,
    /// The server's pid, as recorded by its last spawn (`null`: never spawned).
    pub pid: Option<u32>,
    /// The replica's number (`r<N>`).
    pub replica: u32,
    /// Up, down (or out of date), or never provisioned.
    pub state: ReplicaState,
    /// The server's URL, as recorded by its last spawn (`null`: never spawned).
    pub url: Option<String>,
    /// What the server allocated per device at its last probe (`CUDA0` → bytes), with the
    /// fit's estimate beside it on a GPU; empty when it reported none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub memory: BTreeMap<String, DeviceMemory>,
}

/// A replica's state, in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReplicaState {
    /// Handed off, and nothing about it would run again.
    #[serde(rename = "up")]
    Up,
    /// Never spawned (or retired).
    #[serde(rename = "not provisioned")]
    NotProvisioned,
    /// Spawned once, but down now or no longer what the config says.
    #[serde(rename = "down or out of date")]
    DownOrOutOfDate,
}

impl ReplicaState {
    /// The words `status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Up => "up",
            ReplicaState::NotProvisioned => "not provisioned",
            ReplicaState::DownOrOutOfDate => "down or out of date",
        }
    }
}

/// The JSON schema of [`StatusReport`].
pub fn status_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(StatusReport)).expect("schema serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_status_always_printed_it() {
        let report = StatusReport {
            pools: vec![PoolStatus {
                pool: "p".into(),
                replicas: vec![
                    ReplicaStatus {
                        drift: vec![],
                        matches_config: true,
                        pid: Some(42),
                        replica: 0,
                        state: ReplicaState::Up,
                        url: Some("http://127.0.0.1:8080".into()),
                        memory: BTreeMap::new(),
                    },
                    ReplicaStatus {
                        drift: vec!["spawn:p/r1: never ran".into()],
                        matches_config: false,
                        pid: None,
                        replica: 1,
                        state: ReplicaState::NotProvisioned,
                        url: None,
                        memory: BTreeMap::new(),
                    },
                ],
            }],
            state: ".runtime/state.json".into(),
            steps_to_run: vec!["spawn:p/r1".into()],
        };
        // The body `status --format json` printed, built as it was (a `json!` map).
        let before = serde_json::json!({
            "state": ".runtime/state.json",
            "pools": [{"pool": "p", "replicas": [
                {"replica": 0, "state": "up", "pid": 42, "url": "http://127.0.0.1:8080",
                 "matches_config": true, "drift": []},
                {"replica": 1, "state": "not provisioned", "pid": null, "url": null,
                 "matches_config": false, "drift": ["spawn:p/r1: never ran"]},
            ]}],
            "steps_to_run": ["spawn:p/r1"],
        });
        assert_eq!(
            serde_json::to_string_pretty(&report).unwrap(),
            serde_json::to_string_pretty(&before).unwrap()
        );
        let back: StatusReport = serde_json::from_value(before).unwrap();
        assert_eq!(back, report);
    }
}
