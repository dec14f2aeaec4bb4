//! provision's plan crate: the config contract, validation, flag normalisation and the planner
//! that turns a config into a serialisable DAG of steps. No processes, no network: the only I/O
//! is reading the config file.

pub mod cmake_flags;
pub mod config;
mod config_file;
pub mod diagnostic;
pub mod document;
pub mod engine;
mod excerpt;
pub mod input_limits;
pub mod listen;
pub mod memory_settings;
pub mod model_ref;
pub mod outputs;
pub mod plan;
pub mod planner;
pub mod redact;
pub mod render;
pub mod replica_inputs;
pub mod schema_check;
pub mod secret_placeholder;
pub mod secret_ref;
pub mod secrets;
mod span_index;
pub mod split_name;
pub mod step;
pub mod step_id;
pub mod step_kind;
pub mod step_traits;
pub mod tls;
mod unpassable;
pub mod validate;
mod yaml_value;

/// llama.cpp's flag table, where it always was (it lives in [`engine::llamacpp_flags`]).
pub use engine::llamacpp_flags as llama_flags;

pub use config::{config_schema, Backend, Config, Engine, Pool, ProvisioningMode};
pub use diagnostic::{ConfigError, Diagnostic, Location, Severity};
pub use document::{Document, Format};
pub use outputs::{KindOutputs, StepOutputs};
pub use plan::{Plan, PoolSummary, Roots, PLAN_VERSION};
pub use planner::{plan, PlanOptions};
pub use render::render_text;
pub use step::{Step, StepSpec};
pub use step_id::{ReplicaId, StepId};
pub use step_kind::StepKind;
pub use validate::{load, validate, PoolInput, ValidConfig};

/// The JSON Schema of the plan, as written to `schemas/plan.schema.json`.
pub fn plan_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Plan)).expect("schema serialises")
}
