//! Test helpers for the step crates (dev-dependency only): a real [`Plan`] from a config over
//! temporary roots, [`StepContext`]s for its steps, and real git repositories.

pub mod git;
pub mod workspace;

pub use git::{git, TestRepo};
pub use workspace::{cpu_pool_config, Workspace};
