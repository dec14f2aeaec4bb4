//! Validation: structure (via the schema walk) and meaning (the checks in this module, one file
//! per section). Every problem is collected and reported at once, each at its file, line,
//! column and field path.

use std::path::Path;

use serde::Deserialize;

use crate::cmake_flags::CmakeFlags;
use crate::config::{config_schema, Config, Pool};
use crate::diagnostic::{render_all, ConfigError, Diagnostic, MAX_DIAGNOSTICS};
use crate::document::{parent_path, Document};
use crate::llama_flags::Flag;
use crate::model_ref::ModelRef;
use crate::schema_check::SchemaChecker;
use crate::unpassable::{
    nul_bytes, secret_placeholders, NUL_HELP, NUL_MESSAGE, PLACEHOLDER_HELP, PLACEHOLDER_MESSAGE,
};

use checker::Checker;
pub(crate) use checker::KEPT_DIAGNOSTICS;
use partial::{depends_on, is_under};

mod checker;
mod cross_pool;
mod devices;
mod env;
mod flags;
mod mode;
mod model;
mod partial;
mod pool;
mod ports;

/// A config that passed validation, with each pool's normalised inputs to the planner.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub file: String,
    pub text: String,
    pub config: Config,
    pub pools: Vec<PoolInput>,
    /// Remarks that do not stop the plan (overridden flags, ignored sections): the first
    /// [`MAX_DIAGNOSTICS`].
    pub warnings: Vec<Diagnostic>,
    /// Warnings found beyond those in `warnings`.
    pub warnings_omitted: usize,
}

impl ValidConfig {
    pub fn render_warnings(&self) -> String {
        render_all(
            &self.warnings,
            &self.file,
            Some(&self.text),
            self.warnings_omitted,
        )
    }
}

/// One pool, checked and normalised.
#[derive(Debug, Clone)]
pub struct PoolInput {
    pub pool: Pool,
    /// Normalised llama-server flags (secrets included; render with `to_redacted_argv`).
    pub flags: Vec<Flag>,
    /// Normalised CMake flags (source mode).
    pub cmake: Option<CmakeFlags>,
    /// The model ref as written, and parsed (absent for external servers).
    pub model_ref: Option<(String, ModelRef)>,
    pub checksum: Option<String>,
    /// One port per replica, or empty for automatic ports.
    pub ports: Vec<u16>,
}

/// Read, parse and validate a config file.
pub fn load(path: &Path) -> Result<ValidConfig, ConfigError> {
    let doc = Document::read(path)?;
    validate(&doc)
}

/// Validate a parsed document.
pub fn validate(doc: &Document) -> Result<ValidConfig, ConfigError> {
    let schema = config_schema();
    let (mut diags, structural_omitted) = SchemaChecker::new(&schema, doc).check_counted();
    let structural_errors = diags.clone();

    let mut inputs = Vec::new();
    let mut checker = Checker {
        doc,
        diags: Vec::new(),
        errors: structural_omitted,
        omitted_errors: structural_omitted,
        omitted_warnings: 0,
    };
    for (path, at_key) in nul_bytes(&doc.value) {
        let message = format!("`{path}` {NUL_MESSAGE}");
        checker.error(&path, at_key, &message, Some(NUL_HELP));
    }
    for (path, at_key) in secret_placeholders(&doc.value) {
        let message = format!("`{path}` {PLACEHOLDER_MESSAGE}");
        checker.error(&path, at_key, &message, Some(PLACEHOLDER_HELP));
    }
    // Over the limit, `pools` is one structural error and its pools are not checked.
    let pools = doc.value.get("pools").and_then(|p| p.as_array());
    if let Some(pools) = pools.filter(|p| p.len() <= crate::config::MAX_POOLS) {
        if pools.is_empty() {
            checker.error(
                "pools",
                false,
                "`pools` is empty: there is nothing to provision",
                Some("add at least one pool"),
            );
        }
        // Pools are checked for meaning even when parts of them are malformed: the malformed
        // parts are pruned (and what depends on them is not reported twice).
        let parsed = partial::pools(pools, &structural_errors);
        checker.cross_pool(&parsed);
        checker.pools_per_device(&parsed);
        let total_replicas: u32 = parsed.iter().map(|(_, p)| p.replicas).sum();
        checker.handoff_collisions(&parsed, total_replicas);
        for (path, pool) in parsed {
            checker
                .diags
                .extend(crate::listen::check(doc, &path, &pool));
            checker.diags.extend(crate::tls::check(doc, &path, &pool));
            let clean = !structural_errors.iter().any(|d| is_under(&d.path, &path));
            if let Some(input) = checker.pool(&path, pool) {
                if clean {
                    inputs.push(input);
                }
            }
        }
    }
    // What a structural error already covers is not reported again.
    checker.diags.retain(|d| {
        !structural_errors.iter().any(|e| {
            is_under(&d.path, &e.path)
                || (e.path.ends_with(']') && parent_path(&e.path) == Some(d.path.as_str()))
                || depends_on(&d.path, &e.path)
        })
    });
    diags.extend(checker.diags);

    outcome(
        doc,
        diags,
        inputs,
        checker.omitted_errors,
        checker.omitted_warnings,
    )
}

/// The valid config, with its warnings, or the config's errors: `diags` is every problem
/// found, `omitted_*` those found beyond the ones kept.
fn outcome(
    doc: &Document,
    mut diags: Vec<Diagnostic>,
    inputs: Vec<PoolInput>,
    omitted_errors: usize,
    omitted_warnings: usize,
) -> Result<ValidConfig, ConfigError> {
    let config = if omitted_errors > 0 || diags.iter().any(Diagnostic::is_error) {
        None
    } else {
        match Config::deserialize(&doc.value) {
            Ok(c) => Some(c),
            Err(e) => {
                diags.push(Diagnostic::error("", format!("invalid config: {e}")));
                None
            }
        }
    };
    diags.sort_by(|a, b| (a.location, &a.path).cmp(&(b.location, &b.path)));
    match config {
        Some(config) => {
            let warnings_omitted = diags.len().saturating_sub(MAX_DIAGNOSTICS) + omitted_warnings;
            diags.truncate(MAX_DIAGNOSTICS);
            Ok(ValidConfig {
                file: doc.file.clone(),
                text: doc.text.clone(),
                config,
                pools: inputs,
                warnings: diags,
                warnings_omitted,
            })
        }
        None => {
            let mut err = ConfigError::new(
                &doc.file,
                Some(doc.text.clone()),
                diags.into_iter().filter(Diagnostic::is_error).collect(),
            );
            err.omitted += omitted_errors;
            Err(err)
        }
    }
}
