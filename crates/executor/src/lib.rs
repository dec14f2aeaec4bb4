//! Runs a plan: ready set, parallelism, state file, fingerprints. Not written yet: `provision
//! apply` does not exist. See the README's status table.
