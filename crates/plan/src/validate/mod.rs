//! Validation: structure (via the schema walk) and meaning (the checks below). Every problem is
//! collected and reported at once, each at its file, line, column and field path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::cmake_flags::{self, CmakeFlags};
use crate::config::{config_schema, Backend, Config, Engine, Pool, ProvisioningMode};
use crate::diagnostic::{
    did_you_mean, render_all, ConfigError, Diagnostic, Location, MAX_DIAGNOSTICS,
};
use crate::document::{join_index, join_key, parent_path, Document};
use crate::llama_flags::{self, Flag, FlagContext};
use crate::memory_settings::{raw_index, MemorySettings};
use crate::model_ref::{parse_checksum, ModelRef};
use crate::schema_check::SchemaChecker;
use crate::unpassable::{nul_bytes, starts_with_tilde, NUL_HELP, NUL_MESSAGE, TILDE_HELP};

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
        let mut parsed: Vec<(String, Pool)> = Vec::new();
        for (i, raw) in pools.iter().enumerate() {
            let path = join_index("pools", i);
            // A bad list item prunes its whole list: removing just the item would shift the
            // items after it, and checks of the list would point at the wrong ones.
            let bad: BTreeSet<&str> = structural_errors
                .iter()
                .map(|d| d.path.as_str())
                .filter(|p| is_under(p, &path) && *p != path)
                .map(|p| match p[path.len()..].find('[') {
                    Some(i) => &p[..path.len() + i],
                    None => p,
                })
                .collect();
            // Most pools are whole: read them where they are rather than from a copy.
            let complete = bad.is_empty()
                && raw
                    .as_object()
                    .is_some_and(|obj| REQUIRED.iter().all(|f| obj.contains_key(*f)));
            let pool = if complete {
                Pool::deserialize(raw).ok()
            } else {
                let mut raw = raw.clone();
                for p in bad.iter().rev() {
                    prune(&mut raw, &p[path.len()..]);
                }
                if let Some(obj) = raw.as_object_mut() {
                    for field in REQUIRED {
                        obj.entry(field).or_insert_with(|| placeholder(field));
                    }
                }
                serde_json::from_value::<Pool>(raw).ok()
            };
            if let Some(pool) = pool {
                parsed.push((path, pool));
            }
        }
        checker.cross_pool(&parsed);
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

    let config = if checker.omitted_errors > 0 || diags.iter().any(Diagnostic::is_error) {
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
            let warnings_omitted =
                diags.len().saturating_sub(MAX_DIAGNOSTICS) + checker.omitted_warnings;
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
            err.omitted += checker.omitted_errors;
            Err(err)
        }
    }
}

/// Required pool fields: each gets a [`placeholder`] when it is missing or malformed, so that
/// the rest of the pool can still be checked.
const REQUIRED: [&str; 4] = ["id", "engine", "model", "devices"];

fn placeholder(field: &str) -> Value {
    match field {
        "engine" => json!("llamacpp"),
        "devices" => json!([]),
        _ => json!(""),
    }
}

struct Checker<'a> {
    doc: &'a Document,
    /// The problems kept: at most [`KEPT_DIAGNOSTICS`].
    diags: Vec<Diagnostic>,
    /// Errors found, kept or not.
    errors: usize,
    omitted_errors: usize,
    omitted_warnings: usize,
}

/// The most problems validation keeps while it runs (only the first [`MAX_DIAGNOSTICS`] in
/// document order are shown; more are kept than shown because they are found out of order):
/// the rest are counted, so that a config with a million mistakes costs no more memory than
/// one with a thousand.
pub(crate) const KEPT_DIAGNOSTICS: usize = 10 * MAX_DIAGNOSTICS;

const CHECKSUM_HELP: &str = "compute it with `sha256sum FILE` and write `sha256:<hex>`";
const POOL_ID_HELP: &str =
    "use up to 64 letters, digits, `.`, `_` and `-`, starting with a letter or digit";

impl Checker<'_> {
    fn push(&mut self, d: Diagnostic, at_key: bool) {
        if d.is_error() {
            self.errors += 1;
        }
        if self.diags.len() >= KEPT_DIAGNOSTICS {
            match d.is_error() {
                true => self.omitted_errors += 1,
                false => self.omitted_warnings += 1,
            }
            return;
        }
        let loc = if at_key {
            self.doc.key_location(&d.path)
        } else {
            self.doc.value_location(&d.path)
        };
        self.diags.push(d.at(loc));
    }

    fn error(&mut self, path: &str, at_key: bool, message: &str, help: Option<&str>) {
        let mut d = Diagnostic::error(path, message);
        d.help = help.map(str::to_string);
        self.push(d, at_key);
    }

    fn warning(&mut self, path: &str, message: &str, help: Option<&str>) {
        let mut d = Diagnostic::warning(path, message);
        d.help = help.map(str::to_string);
        self.push(d, true);
    }

    /// A path field that starts with `~` is an error: provision does not expand it.
    fn no_tilde(&mut self, path: &str, value: &str) {
        if starts_with_tilde(value) {
            let message = format!("`{value}` starts with `~`, which provision does not expand");
            self.error(path, false, &message, Some(TILDE_HELP));
        }
    }

    fn line_of(&self, path: &str) -> String {
        match self.doc.key_location(path) {
            Some(Location { line, .. }) => format!("{path} (line {line})"),
            None => path.to_string(),
        }
    }

    fn cross_pool(&mut self, pools: &[(String, Pool)]) {
        let mut ids: BTreeMap<&str, &str> = BTreeMap::new();
        // Where each port is first used: the pool's path and the port's position.
        let mut ports: BTreeMap<u32, (&str, usize)> = BTreeMap::new();
        let port_path = |path: &str, j: usize| join_index(&join_key(path, "provisioning.ports"), j);
        for (path, pool) in pools {
            if let Some(first) = ids.get(pool.id.as_str()) {
                let msg = format!(
                    "duplicate pool id `{}`: already used by {}",
                    pool.id,
                    self.line_of(first)
                );
                self.error(
                    &join_key(path, "id"),
                    false,
                    &msg,
                    Some("give every pool a unique id"),
                );
            } else {
                ids.insert(&pool.id, path);
            }
            for (j, port) in pool.provisioning.ports.iter().enumerate() {
                if let Some(&(first_pool, first_j)) = ports.get(&port.0) {
                    let first = port_path(first_pool, first_j);
                    let msg = format!(
                        "port {} is already used by {}",
                        port.0,
                        self.line_of(&first)
                    );
                    self.error(
                        &port_path(path, j),
                        false,
                        &msg,
                        Some("give every replica of every pool its own port"),
                    );
                } else {
                    ports.insert(port.0, (path, j));
                }
            }
        }
    }

    fn handoff_collisions(&mut self, pools: &[(String, Pool)], total_replicas: u32) {
        // Each handoff file, and the pool and field that name it first.
        let mut seen: BTreeMap<String, (&str, &str)> = BTreeMap::new();
        let mut ids: BTreeSet<&str> = BTreeSet::new();
        for (path, pool) in pools {
            // A duplicate id is reported once, as such.
            if !ids.insert(&pool.id) {
                continue;
            }
            let field = if pool.handoff_path.is_some() {
                "handoff_path"
            } else {
                "id"
            };
            for r in 0..pool.replicas {
                let file = crate::planner::handoff_path(pool, r, total_replicas);
                if let Some(&(first_pool, first_field)) = seen.get(&file) {
                    let first = self.line_of(&join_key(first_pool, first_field));
                    let msg = format!("handoff file `{file}` is also written by {first}");
                    self.error(
                        &join_key(path, field),
                        false,
                        &msg,
                        Some("give each pool its own `handoff_path`"),
                    );
                    break;
                }
                seen.insert(file, (path, field));
            }
        }
    }

    fn pool(&mut self, p: &str, pool: Pool) -> Option<PoolInput> {
        let before = self.errors;
        let prov = &pool.provisioning;
        let pp = join_key(p, "provisioning");

        let id_ok = !pool.id.is_empty()
            && pool.id.len() <= 64
            && pool
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && pool
                .id
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        if !id_ok {
            let msg = if pool.id.is_empty() {
                "the pool id is empty".to_string()
            } else {
                format!("pool id `{}` is not a valid name", pool.id)
            };
            self.error(&join_key(p, "id"), false, &msg, Some(POOL_ID_HELP));
        }
        if pool.engine != Engine::Llamacpp {
            let msg = format!(
                "engine `{}` is not supported yet: provision runs llamacpp pools only",
                pool.engine.as_str()
            );
            self.error(
                &join_key(p, "engine"),
                false,
                &msg,
                Some("set `engine: llamacpp`, or provision this pool with another tool"),
            );
        }
        if pool.model.trim().is_empty() {
            self.error(
                &join_key(p, "model"),
                false,
                "the pool's `model` is empty",
                Some("name the model, e.g. `model: qwen2.5-0.5b-instruct-q4_k_m.gguf`"),
            );
        }
        if let Some(h) = &pool.handoff_path {
            self.no_tilde(&join_key(p, "handoff_path"), h);
            if h.trim().is_empty() {
                self.error(
                    &join_key(p, "handoff_path"),
                    false,
                    "`handoff_path` is empty",
                    Some("give a file path, or remove it for the default"),
                );
            }
        }

        // Devices and backend.
        let devices_path = join_key(p, "devices");
        match pool.backend {
            Backend::Cuda => {
                if pool.devices.is_empty() && prov.mode != ProvisioningMode::External {
                    self.error(
                        &devices_path,
                        false,
                        "a GPU pool needs at least one device",
                        Some("list GPU indices, e.g. `devices: [0]`, or set `backend: cpu` for an explicit CPU pool"),
                    );
                }
                if prov.env.contains_key("CUDA_VISIBLE_DEVICES") {
                    self.error(
                        &join_key(&join_key(&pp, "env"), "CUDA_VISIBLE_DEVICES"),
                        true,
                        "`CUDA_VISIBLE_DEVICES` is set by provision from `devices`",
                        Some("remove it from env and list the GPUs in `devices`"),
                    );
                }
            }
            Backend::Cpu => {
                if !pool.devices.is_empty() {
                    self.warning(
                        &devices_path,
                        "a CPU pool uses no GPU: `devices` is ignored",
                        Some("set `devices: []`"),
                    );
                }
                if pool.tensor_split.is_some() {
                    self.error(
                        &join_key(p, "tensor_split"),
                        true,
                        "`tensor_split` needs a GPU pool",
                        Some("remove it, or set `backend: cuda`"),
                    );
                }
            }
        }
        for (j, d) in pool.devices.iter().enumerate() {
            if pool.devices[..j].contains(d) {
                let msg = format!("device {d} is listed twice");
                self.error(
                    &join_index(&devices_path, j),
                    false,
                    &msg,
                    Some("list each GPU once"),
                );
            }
        }
        if let (Some(split), Backend::Cuda) = (&pool.tensor_split, pool.backend) {
            let sp = join_key(p, "tensor_split");
            if split.len() != pool.devices.len() {
                let msg = format!(
                    "`tensor_split` has {} but the pool has {}",
                    plural(split.len(), "ratio"),
                    plural(pool.devices.len(), "device")
                );
                self.error(
                    &sp,
                    false,
                    &msg,
                    Some("give one ratio per device, in the order of `devices`"),
                );
            }
            for (j, r) in split.iter().enumerate() {
                if !r.is_finite() || *r <= 0.0 {
                    let msg = format!("tensor split ratio {r} must be greater than 0");
                    self.error(
                        &join_index(&sp, j),
                        false,
                        &msg,
                        Some("use positive ratios, e.g. [3, 1]"),
                    );
                }
            }
        }

        // Mode.
        self.check_mode(&pp, &pool);

        // Ports.
        let ports: Vec<u16> = prov.ports.iter().map(|p| p.0 as u16).collect();
        if !ports.is_empty() && ports.len() != pool.replicas as usize {
            let msg = format!(
                "{} {} for {} {}",
                ports.len(),
                if ports.len() == 1 { "port" } else { "ports" },
                pool.replicas,
                if pool.replicas == 1 {
                    "replica"
                } else {
                    "replicas"
                }
            );
            self.error(
                &join_key(&pp, "ports"),
                false,
                &msg,
                Some("give one port per replica, or omit `ports` to use free ports from 8080"),
            );
        }

        // Env.
        for key in prov.env.keys() {
            // A NUL byte is reported for every field (see `crate::unpassable`).
            if key.is_empty() || key.contains('=') {
                let msg = format!("`{key}` is not a valid environment variable name");
                self.error(
                    &join_key(&join_key(&pp, "env"), key),
                    true,
                    &msg,
                    Some("use a non-empty name without `=`"),
                );
            }
        }

        // Model.
        let mut model_ref = None;
        let mut checksum = None;
        if prov.mode != ProvisioningMode::External {
            let (ref_path, text) = match &prov.model {
                Some(m) if m.model_ref.trim().is_empty() => {
                    self.error(
                        &join_key(&pp, "model.ref"),
                        true,
                        "missing model ref: `provisioning.model` has no `ref`",
                        Some("set `ref` (a path, `hf:ORG/REPO/FILE.gguf` or `https://…`), or remove `provisioning.model` to use the pool's `model`"),
                    );
                    (None, String::new())
                }
                Some(m) => (Some(join_key(&pp, "model.ref")), m.model_ref.clone()),
                None => (Some(join_key(p, "model")), pool.model.clone()),
            };
            if let Some(ref_path) = &ref_path {
                self.no_tilde(ref_path, &text);
            }
            if let Some(ref_path) =
                ref_path.filter(|_| !text.trim().is_empty() && !starts_with_tilde(&text))
            {
                match ModelRef::parse(&text) {
                    Ok(r) => model_ref = Some((text.trim().to_string(), r)),
                    Err(e) => {
                        let msg = format!("malformed model ref: {e}");
                        self.error(&ref_path, false, &msg, Some("e.g. `hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf` or `./models/tiny.gguf`"));
                    }
                }
            }
            if let Some(dir) = prov.model.as_ref().and_then(|m| m.cache_dir.as_deref()) {
                self.no_tilde(&join_key(&pp, "model.cache_dir"), dir);
            }
            if let Some(c) = prov.model.as_ref().and_then(|m| m.checksum.as_ref()) {
                match parse_checksum(c) {
                    Ok(c) => checksum = Some(c),
                    Err(e) => self.error(
                        &join_key(&pp, "model.checksum"),
                        false,
                        &format!("malformed checksum: {e}"),
                        Some(CHECKSUM_HELP),
                    ),
                }
            }
        }

        // Flags.
        let normalized = llama_flags::normalize(
            &prov.flags,
            FlagContext {
                backend: pool.backend,
                ctx: pool.ctx,
                tensor_split: pool.tensor_split.as_deref(),
            },
        );
        let flags_path = join_key(&pp, "flags");
        for note in &normalized.notes {
            let path = note
                .index
                .map_or(flags_path.clone(), |i| join_index(&flags_path, i));
            if note.error {
                self.error(&path, false, &note.message, note.help.as_deref());
            } else {
                let mut d = Diagnostic::warning(&path, &note.message);
                d.help = note.help.clone();
                self.push(d, false);
            }
        }

        // The memory settings the vram-fit step estimates with must be readable (checked
        // once the pool is otherwise valid: a bad `tensor_split` is reported at the field).
        if self.errors == before && prov.mode != ProvisioningMode::External {
            if let Err(bad) = MemorySettings::from_flags(&normalized.flags) {
                let path = raw_index(&prov.flags, &bad.flag)
                    .map_or(flags_path.clone(), |i| join_index(&flags_path, i));
                self.error(&path, false, &bad.message, Some(&bad.help));
            }
        }

        // CMake flags.
        let mut cmake = None;
        if prov.mode == ProvisioningMode::Source {
            if let Some(source) = &prov.source {
                let (flags, notes) =
                    cmake_flags::normalize(&source.build.cmake_flags, pool.backend);
                let cp = join_key(&pp, "source.build.cmake_flags");
                for note in notes {
                    let path = note.index.map_or(cp.clone(), |i| join_index(&cp, i));
                    let mut d = if note.error {
                        Diagnostic::error(&path, note.message)
                    } else {
                        Diagnostic::warning(&path, note.message)
                    };
                    d.help = note.help;
                    self.push(d, false);
                }
                cmake = Some(flags);
            }
        }

        let after = self.errors;
        (after == before).then_some(PoolInput {
            flags: normalized.flags,
            cmake,
            model_ref,
            checksum,
            ports,
            pool,
        })
    }

    fn check_mode(&mut self, pp: &str, pool: &Pool) {
        let prov = &pool.provisioning;
        let mode = prov.mode;
        let mode_path = join_key(pp, "mode");
        match mode {
            ProvisioningMode::Container | ProvisioningMode::Package => {
                let msg = format!("provisioning mode `{}` is not supported yet", mode.as_str());
                self.error(&mode_path, false, &msg, Some("use `source` (build llama-server), `binary` (a llama-server on disk) or `external` (a running server)"));
            }
            ProvisioningMode::Source => match &prov.source {
                None => self.error(&join_key(pp, "source"), true, "mode `source` needs a `source` section with `repo` and `ref`", Some("add `source: {repo: https://github.com/ggml-org/llama.cpp.git, ref: <tag or commit>}`")),
                Some(source) => {
                    let sp = join_key(pp, "source");
                    if source.repo.trim().is_empty() {
                        self.error(&join_key(&sp, "repo"), true, "mode `source` needs `source.repo`", Some("set `repo` to a git URL, e.g. https://github.com/ggml-org/llama.cpp.git"));
                    } else if !repo_url_ok(&source.repo) {
                        let msg = format!("`{}` is not a git URL or a path", crate::planner::redact_url(&source.repo));
                        self.error(&join_key(&sp, "repo"), false, &msg, Some("use https://, ssh://, git@host:path, file://, an absolute path, or ./ or ../ (relative to the config file)"));
                    }
                    let r = source.git_ref.trim();
                    if r.is_empty() {
                        self.error(&join_key(&sp, "ref"), true, "mode `source` needs `source.ref`", Some("set `ref` to a tag, branch or commit SHA"));
                    } else if r.starts_with('-') || r.chars().any(|c| c.is_whitespace() || c.is_control()) || r.contains("..") {
                        let msg = format!("`{r}` is not a valid git ref");
                        self.error(&join_key(&sp, "ref"), false, &msg, Some("use a tag, branch or commit SHA"));
                    }
                    if let Some(dir) = &source.build.cache_dir {
                        self.no_tilde(&join_key(&sp, "build.cache_dir"), dir);
                    }
                    if let Some(g) = &source.build.generator {
                        const KNOWN: &[&str] = &["Ninja", "Unix Makefiles", "Ninja Multi-Config"];
                        if !KNOWN.contains(&g.as_str()) {
                            let help = did_you_mean(g, KNOWN.iter().copied())
                                .map(|s| format!("did you mean `{s}`?"))
                                .unwrap_or_else(|| "use `Ninja` or `Unix Makefiles`".into());
                            let msg = format!("unknown CMake generator `{g}`");
                            self.error(&join_key(&sp, "build.generator"), false, &msg, Some(&help));
                        }
                    }
                }
            },
            ProvisioningMode::Binary => match &prov.binary {
                Some(b) if b.path.as_deref().is_some_and(|p| !p.trim().is_empty()) => {
                    self.no_tilde(&join_key(pp, "binary.path"), b.path.as_deref().unwrap_or(""));
                    if let Some(c) = &b.checksum {
                        if let Err(e) = parse_checksum(c) {
                            self.error(&join_key(pp, "binary.checksum"), false, &format!("malformed checksum: {e}"), Some(CHECKSUM_HELP));
                        }
                    }
                }
                Some(b) if b.url.is_some() => self.error(
                    &join_key(pp, "binary.url"),
                    true,
                    "binary downloads (`binary.url`) are not supported yet",
                    Some("build from source (`mode: source`) or point `binary.path` at a llama-server on disk"),
                ),
                _ => self.error(&join_key(pp, "binary.path"), true, "mode `binary` needs `binary.path`", Some("set `binary: {path: /path/to/llama-server}`")),
            },
            ProvisioningMode::External => {
                let url = prov.external.as_ref().map(|e| e.url.trim()).unwrap_or("");
                if url.is_empty() {
                    self.error(&join_key(pp, "external.url"), true, "mode `external` needs `external.url`", Some("set `external: {url: http://host:port}`"));
                } else if !(url.starts_with("http://") || url.starts_with("https://")) {
                    let msg = format!("`{url}` is not an http(s) URL");
                    self.error(&join_key(pp, "external.url"), false, &msg, Some("write e.g. http://127.0.0.1:8080"));
                }
                if pool.replicas != 1 {
                    self.error(&join_key(pp.trim_end_matches(".provisioning"), "replicas"), false, "an external server is one replica", Some("remove `replicas`"));
                }
                if !prov.ports.is_empty() {
                    self.warning(&join_key(pp, "ports"), "`ports` is ignored for an external server", Some("the port is part of `external.url`"));
                }
            }
        }
        let sections: [(&str, bool, ProvisioningMode); 5] = [
            ("source", prov.source.is_some(), ProvisioningMode::Source),
            ("binary", prov.binary.is_some(), ProvisioningMode::Binary),
            (
                "external",
                prov.external.is_some(),
                ProvisioningMode::External,
            ),
            (
                "container",
                prov.container.is_some(),
                ProvisioningMode::Container,
            ),
            ("package", prov.package.is_some(), ProvisioningMode::Package),
        ];
        for (name, present, for_mode) in sections {
            if present && for_mode != mode {
                let msg = format!("`{name}` is ignored: the mode is `{}`", mode.as_str());
                let help = format!("set `mode: {name}` to use it, or remove it");
                self.warning(&join_key(pp, name), &msg, Some(&help));
            }
        }
    }
}

/// Pool fields checked against another pool field: (checked, against). When the second is
/// malformed, the first is checked against a default and its error would be misleading.
const DEPENDS_ON: &[(&str, &str)] = &[
    ("devices", "backend"),
    ("tensor_split", "devices"),
    ("tensor_split", "backend"),
    ("provisioning.ports", "replicas"),
    ("provisioning.source", "provisioning.mode"),
];

/// The error at `path` comes from comparing it with the malformed field at `error_path`.
fn depends_on(path: &str, error_path: &str) -> bool {
    DEPENDS_ON.iter().any(|(checked, against)| {
        path.strip_suffix(checked)
            .and_then(|pool| pool.strip_suffix('.'))
            .is_some_and(|pool| is_under(error_path, &join_key(pool, against)))
    })
}

/// `path` is `prefix` or inside it.
fn is_under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        || prefix.is_empty()
}

/// Remove the node at `rel` (`.a.b[2]`, relative to `value`).
fn prune(value: &mut Value, rel: &str) {
    let mut segments: Vec<&str> = Vec::new();
    for part in rel.split('.').filter(|s| !s.is_empty()) {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                segments.push(&rest[..i]);
            }
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                segments.push(&rest[..=end]);
                rest = &rest[end + 1..];
            }
        } else {
            segments.push(rest);
        }
    }
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut node = value;
    for seg in parents {
        let next = match seg.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            Some(i) => i.parse::<usize>().ok().and_then(|i| node.get_mut(i)),
            None => node.get_mut(*seg),
        };
        match next {
            Some(n) => node = n,
            None => return,
        }
    }
    match last.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        Some(i) => {
            if let (Some(arr), Ok(i)) = (node.as_array_mut(), i.parse::<usize>()) {
                if i < arr.len() {
                    arr.remove(i);
                }
            }
        }
        None => {
            if let Some(obj) = node.as_object_mut() {
                obj.remove(*last);
            }
        }
    }
}

fn repo_url_ok(repo: &str) -> bool {
    let r = repo.trim();
    ["https://", "http://", "ssh://", "git://", "file://"]
        .iter()
        .any(|s| r.starts_with(s) && r.len() > s.len())
        || r.starts_with('/')
        || r.starts_with("./")
        || r.starts_with("../")
        || (r.contains('@') && r.contains(':') && !r.contains("://"))
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
