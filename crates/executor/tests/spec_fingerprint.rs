//! Every input of a step is in its fingerprint (issue 14, item 1): for every step kind, a spec
//! with every field set, then
//!
//! - every field of the spec (listed by destructuring each spec struct without `..`, so a new
//!   field does not compile until it is listed here) is either serialised into the spec that
//!   the fingerprint hashes, or is named in [`NOT_IDENTITY`] with the reason it must not count;
//! - every secret of the step (the values of its `${secret:NAME}` placeholders, in the plan's
//!   secrets table) changes the fingerprint through the secrets' digest, or is named in
//!   [`NOT_IDENTITY_SECRETS`] with the reason it must not count;
//! - every leaf of the serialised spec, changed to another valid value, changes the
//!   fingerprint (the spec read back from the changed JSON is what a step's `run` reads).
//!
//! The fingerprint is computed as the executor's `decide` does: the spec's JSON, and the
//! secrets' digest as the fact `secrets`.

use std::collections::{BTreeMap, BTreeSet};

use provision_executor::fingerprint::{fingerprint, secret_digest, spec_value};
use provision_plan::config::SecretRef;
use provision_plan::memory_settings::{FlashAttn, GpuLayers, MemorySettings, SplitMode};
use provision_plan::model_ref::ModelRef;
use provision_plan::secrets::StepSecrets;
use provision_plan::step::*;
use provision_plan::{Backend, Engine, Step, StepSpec};
use serde_json::Value;

/// Secrets a step reads that are deliberately not part of what it is, and why.
const NOT_IDENTITY_SECRETS: &[(&str, &str, &str)] = &[
    (
        "model-resolve",
        "source.sig",
        "how to fetch, not what: a rotated signed URL must not re-download the model or restart its servers; the checksum and path say what",
    ),
    (
        "probe",
        "url.userinfo",
        "probe is a liveness step: it runs on every apply, whatever its fingerprint",
    ),
    (
        "probe",
        "api_key",
        "the spawn's API key given as a flag or env value: that spawn takes its digest (its whole environment), so a changed key restarts the spawn and re-runs the probe after it; and probe is a liveness step",
    ),
];

/// Fields a step reads that are deliberately not part of what it is, and why.
const NOT_IDENTITY: &[(&str, &str, &str)] = &[
    (
        "spawn",
        "reserved_ports",
        "the ports the plan's other replicas fix: a fixed port added elsewhere must not restart every automatic-port server; the spawn's liveness check restarts, alone, the one whose recorded port is now reserved",
    ),
];

fn s(v: &str) -> String {
    v.to_string()
}

fn memory() -> MemorySettings {
    MemorySettings {
        ctx: Some(4096),
        parallel: 2,
        n_gpu_layers: GpuLayers::Count(33),
        batch_size: 2048,
        ubatch_size: 512,
        flash_attn: FlashAttn::Auto,
        cache_type_k: s("f16"),
        cache_type_v: s("q8_0"),
        tensor_split: Some(vec![1.0, 3.0]),
        split_mode: SplitMode::Layer,
        main_gpu: 0,
    }
}

/// One spec of every kind, every optional field set and every list non-empty.
fn full_specs() -> Vec<StepSpec> {
    vec![
        StepSpec::PreflightTools(PreflightTools {
            tools: vec![ToolRequirement {
                name: s("C++ compiler"),
                any_of: vec![s("c++"), s("g++")],
                needed_for: s("building llama.cpp"),
            }],
            allow_package_installs: false,
        }),
        StepSpec::GpuCheck(GpuCheck {
            devices: vec![0, 1],
            argv: vec![s("nvidia-smi"), s("--query-gpu=index")],
        }),
        StepSpec::GitClone(GitClone {
            repo: s("https://${secret:repo.userinfo}@example.com/llama.cpp"),
            git_ref: s("b4567"),
            submodules: true,
            dir: s("${cache}/src/llama.cpp"),
            commands: vec![vec![s("git"), s("clone")]],
        }),
        StepSpec::CmakeConfigure(CmakeConfigure {
            source_dir: s("${cache}/src"),
            build_dir: s("${cache}/build/x"),
            generator: Some(s("Ninja")),
            defines: BTreeMap::from([(s("GGML_CUDA"), s("ON"))]),
            extra_args: vec![s("--fresh")],
            cuda: true,
            argv: vec![s("cmake"), s("-S")],
        }),
        StepSpec::CmakeBuild(CmakeBuild {
            build_dir: s("${cache}/build/x"),
            target: s("llama-server"),
            argv: vec![s("cmake"), s("--build")],
            binary: s("${cache}/build/x/bin/llama-server"),
        }),
        StepSpec::ModelResolve(ModelResolve {
            model_ref: s("https://example.com/m.gguf?sig=<redacted>"),
            source: ModelRef::Url {
                url: s("https://example.com/m.gguf?sig=${secret:source.sig}"),
            },
            checksum: Some(format!("sha256:{}", "a".repeat(64))),
            path: s("${model_path}"),
            cache_dir: s("${cache}/models"),
        }),
        StepSpec::VramFit(VramFit {
            pool: s("a"),
            devices: vec![0, 1],
            replicas: 2,
            model: provision_plan::StepId::ModelResolve(s("m.gguf")),
            memory: memory(),
            placed_before: vec![LedgerPool {
                pool: s("b"),
                devices: vec![1],
                replicas: 1,
                model: provision_plan::StepId::ModelResolve(s("n.gguf")),
                memory: memory(),
            }],
        }),
        StepSpec::Spawn(Spawn {
            pool: s("a"),
            replica: 0,
            // Not the default: `llamacpp` is not serialised.
            engine: Engine::Vllm,
            backend: Backend::Cuda,
            binary: s("/opt/llama-server"),
            argv: vec![s("--threads"), s("1"), s("--fit"), s("off")],
            unless_unknown: vec![s("--fit")],
            env: BTreeMap::from([
                (s("HF_TOKEN"), s("${secret:env.HF_TOKEN}")),
                (s("LOG"), s("info")),
            ]),
            host: s("127.0.0.1"),
            port: PortSpec::Fixed { port: 8080 },
            reserved_ports: BTreeSet::from([8081]),
            handoff_path: Some(s("${runtime}/engines/a.json")),
            api_key: Some(SecretRef::Env(s("KEY"))),
            devices: vec![0],
            log: s("${runtime}/logs/a.log"),
            pid_file: s("${runtime}/a.pid"),
            tls: Some(TlsFiles {
                cert_file: s("/etc/tls/a.crt"),
                key_file: s("/etc/tls/a.key"),
            }),
        }),
        StepSpec::Probe(Probe {
            pool: s("a"),
            replica: 0,
            engine: Engine::Vllm,
            url: s("http://${secret:url.userinfo}@127.0.0.1:8080"),
            health_path: s("/health"),
            metrics: true,
            timeout_ms: 1000,
            external: false,
            pinned_cert: Some(s("/etc/tls/a.crt")),
            handoff_path: Some(s("${runtime}/engines/a.json")),
            api_key: Some(SecretRef::File(s("${config_dir}/key"))),
        }),
        StepSpec::Handoff(Handoff {
            pool: s("a"),
            replica: 0,
            path: s("${runtime}/engines/a.json"),
            engine: s("llamacpp"),
            provisioning_mode: s("binary"),
            url: s("http://127.0.0.1:8080"),
            model: HandoffModel {
                id: s("m"),
                path: s("/m.gguf"),
            },
            flags: vec![s("--threads"), s("1")],
            devices: vec![0],
            backend: Backend::Cuda,
            auth: Some(s("bearer")),
            group_readable: true,
            advertise: Some(s("gpu1.example.com")),
        }),
    ]
}

/// The names of every field of a spec, nested spec structs included. Destructured without
/// `..`: a field added to a spec struct fails to compile here until it is listed.
// One exhaustive destructuring per kind, so a new field fails to compile here: a table, not
// logic, and split it would scatter what must be read together.
#[allow(clippy::too_many_lines)]
fn field_names(spec: &StepSpec) -> Vec<&'static str> {
    match spec {
        StepSpec::PreflightTools(PreflightTools {
            tools,
            allow_package_installs: _,
        }) => {
            let mut f = vec!["tools", "allow_package_installs"];
            for ToolRequirement {
                name: _,
                any_of: _,
                needed_for: _,
            } in tools
            {
                f.extend(["name", "any_of", "needed_for"]);
            }
            f
        }
        StepSpec::GpuCheck(GpuCheck {
            devices: _,
            argv: _,
        }) => vec!["devices", "argv"],
        StepSpec::GitClone(GitClone {
            repo: _,
            git_ref: _,
            submodules: _,
            dir: _,
            commands: _,
        }) => vec!["repo", "ref", "submodules", "dir", "commands"],
        StepSpec::CmakeConfigure(CmakeConfigure {
            source_dir: _,
            build_dir: _,
            generator: _,
            defines: _,
            extra_args: _,
            cuda: _,
            argv: _,
        }) => vec![
            "source_dir",
            "build_dir",
            "generator",
            "defines",
            "extra_args",
            "cuda",
            "argv",
        ],
        StepSpec::CmakeBuild(CmakeBuild {
            build_dir: _,
            target: _,
            argv: _,
            binary: _,
        }) => vec!["build_dir", "target", "argv", "binary"],
        StepSpec::ModelResolve(ModelResolve {
            model_ref: _,
            source: _,
            checksum: _,
            path: _,
            cache_dir: _,
        }) => vec!["ref", "source", "checksum", "path", "cache_dir"],
        StepSpec::VramFit(VramFit {
            pool: _,
            devices: _,
            replicas: _,
            model: _,
            placed_before: _,
            memory:
                MemorySettings {
                    ctx: _,
                    parallel: _,
                    n_gpu_layers: _,
                    batch_size: _,
                    ubatch_size: _,
                    flash_attn: _,
                    cache_type_k: _,
                    cache_type_v: _,
                    tensor_split: _,
                    split_mode: _,
                    main_gpu: _,
                },
        }) => vec![
            "pool",
            "devices",
            "replicas",
            "model",
            "placed_before",
            "ctx",
            "parallel",
            "n_gpu_layers",
            "batch_size",
            "ubatch_size",
            "flash_attn",
            "cache_type_k",
            "cache_type_v",
            "tensor_split",
            "split_mode",
            "main_gpu",
        ],
        StepSpec::Spawn(Spawn {
            pool: _,
            replica: _,
            engine: _,
            backend: _,
            binary: _,
            argv: _,
            unless_unknown: _,
            env: _,
            host: _,
            port: _,
            reserved_ports: _,
            handoff_path: _,
            api_key: _,
            devices: _,
            log: _,
            pid_file: _,
            tls: _,
        }) => vec![
            "pool",
            "replica",
            "engine",
            "backend",
            "binary",
            "argv",
            "unless_unknown",
            "env",
            "host",
            "port",
            "reserved_ports",
            "handoff_path",
            "api_key",
            "devices",
            "log",
            "pid_file",
            "tls",
            "cert_file",
            "key_file",
        ],
        StepSpec::Probe(Probe {
            pool: _,
            replica: _,
            engine: _,
            url: _,
            health_path: _,
            metrics: _,
            timeout_ms: _,
            external: _,
            pinned_cert: _,
            handoff_path: _,
            api_key: _,
        }) => vec![
            "pool",
            "replica",
            "engine",
            "url",
            "health_path",
            "metrics",
            "timeout_ms",
            "external",
            "pinned_cert",
            "handoff_path",
            "api_key",
        ],
        StepSpec::Handoff(Handoff {
            pool: _,
            replica: _,
            path: _,
            engine: _,
            provisioning_mode: _,
            url: _,
            model: HandoffModel { id: _, path: _ },
            flags: _,
            devices: _,
            backend: _,
            auth: _,
            group_readable: _,
            advertise: _,
        }) => vec![
            "pool",
            "replica",
            "path",
            "engine",
            "provisioning_mode",
            "url",
            "model",
            "id",
            "flags",
            "devices",
            "backend",
            "auth",
            "group_readable",
            "advertise",
        ],
    }
}

/// The secrets of the step of `spec` (the values of its placeholders, and a probe's API key).
fn full_secrets(spec: &StepSpec) -> StepSecrets {
    let pairs: &[(&str, &str)] = match spec {
        StepSpec::GitClone(_) => &[("repo.userinfo", "token")],
        StepSpec::ModelResolve(_) => &[("source.sig", "s1gnature")],
        StepSpec::Spawn(_) => &[("env.HF_TOKEN", "hf_secret")],
        StepSpec::Probe(_) => &[("url.userinfo", "ops:pw"), ("api_key", "k3y")],
        _ => &[],
    };
    pairs.iter().map(|(k, v)| (s(k), s(v))).collect()
}

fn step(spec: StepSpec) -> Step {
    Step {
        id: format!("{}:x", spec.kind()),
        deps: vec![],
        pools: vec![s("a")],
        spec,
    }
}

/// The fingerprint as the executor's `decide` computes it, with no facts or dependencies and
/// the step's full secrets.
fn fp(step: &Step) -> String {
    fp_with(step, &full_secrets(&step.spec))
}

fn fp_with(step: &Step, secrets: &StepSecrets) -> String {
    let mut facts = BTreeMap::new();
    if let Some(d) = secret_digest(step, secrets) {
        facts.insert(s("secrets"), d);
    }
    fingerprint(&spec_value(step), &facts, &BTreeMap::new())
}

fn keys(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.insert(k.clone());
                keys(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

#[test]
fn every_field_of_every_spec_is_in_its_fingerprint_or_named_as_not_identity() {
    let specs = full_specs();
    let kinds: BTreeSet<&str> = specs.iter().map(StepSpec::kind).collect();
    assert_eq!(kinds.len(), 10, "one spec of every kind: {kinds:?}");
    for spec in specs {
        let kind = spec.kind();
        let step = step(spec.clone());
        let mut serialised = BTreeSet::new();
        keys(&spec_value(&step), &mut serialised);
        for field in field_names(&spec) {
            if serialised.contains(field) {
                continue;
            }
            assert!(
                NOT_IDENTITY
                    .iter()
                    .any(|(k, f, _)| *k == kind && *f == field),
                "{kind}.{field} is not serialised into the spec the fingerprint hashes: \
                 serialise it, or name it in NOT_IDENTITY with the reason a change must not \
                 re-run the step"
            );
        }
    }
}

#[test]
fn every_secret_of_every_spec_is_in_its_fingerprint_or_named_as_not_identity() {
    let mut seen = 0;
    for spec in full_specs() {
        let kind = spec.kind();
        let step = step(spec.clone());
        let secrets = full_secrets(&spec);
        for name in secrets.names() {
            seen += 1;
            let rotated: StepSecrets = secrets
                .names()
                .map(|n| {
                    (
                        s(n),
                        format!("{}{}", secrets.get(n).unwrap(), u8::from(n == name)),
                    )
                })
                .collect();
            let changes = fp_with(&step, &secrets) != fp_with(&step, &rotated);
            let exempt = NOT_IDENTITY_SECRETS
                .iter()
                .any(|(k, n, _)| *k == kind && *n == name);
            assert!(
                changes != exempt,
                "{kind} secret `{name}`: a changed value must change the fingerprint (through \
                 `StepSpec::secret_input`) unless NOT_IDENTITY_SECRETS names it with the reason; \
                 one named there must not (changes: {changes})"
            );
        }
        // Every placeholder of the spec has its value here.
        let json = serde_json::to_string(&spec).unwrap();
        for name in provision_plan::secret_placeholder::names_in(&json) {
            assert!(secrets.get(name).is_some(), "{kind}: `{name}` has no value");
        }
    }
    assert_eq!(seen, 5);
}

/// Every string an enum of the plan schema allows: candidates for a changed enum leaf.
fn schema_strings() -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("enum", Value::Array(a)) => {
                            out.extend(a.iter().filter_map(|x| x.as_str().map(s)));
                        }
                        ("const", Value::String(c)) => {
                            out.insert(c.clone());
                        }
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(&provision_plan::plan_schema(), &mut out);
    out
}

/// JSON pointers of every leaf (strings, numbers, booleans) under `v`.
fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| {
            leaves(
                v,
                format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                out,
            )
        }),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(v, format!("{at}/{i}"), out)),
        _ => out.push(at),
    }
}

/// The tag keys of the internally tagged enums in specs.
const TAGS: &[&str] = &["kind", "source", "mode"];

fn candidates(leaf: &Value, enums: &BTreeSet<String>) -> Vec<Value> {
    match leaf {
        Value::Bool(b) => vec![Value::Bool(!b)],
        Value::Number(n) if n.is_u64() => vec![(n.as_u64().unwrap() + 1).into()],
        Value::Number(n) if n.is_i64() => vec![(n.as_i64().unwrap() + 1).into()],
        Value::Number(n) => vec![(n.as_f64().unwrap() + 0.5).into()],
        Value::String(v) => std::iter::once(format!("{v}x"))
            .chain(enums.iter().filter(|e| *e != v).cloned())
            .map(Value::String)
            .collect(),
        _ => vec![],
    }
}

#[test]
fn changing_any_leaf_of_any_spec_changes_its_fingerprint() {
    let enums = schema_strings();
    for spec in full_specs() {
        let kind = spec.kind();
        let json = serde_json::to_value(&spec).unwrap();
        // Read back from JSON on both sides: the secrets (never serialised) are empty in both,
        // so only the changed leaf differs.
        let spec: StepSpec = serde_json::from_value(json.clone()).unwrap();
        let base = fp(&step(spec.clone()));
        let mut ptrs = Vec::new();
        leaves(&json, String::new(), &mut ptrs);
        // The tags of internally tagged enums (`StepSpec`, `ModelRef`, `PortSpec`): another
        // variant needs other fields, and the variant's own fields are leaves here.
        let is_tag = |p: &str| TAGS.iter().any(|t| p.ends_with(&format!("/{t}")));
        for ptr in ptrs.iter().filter(|p| !is_tag(p)) {
            let leaf = json.pointer(ptr).unwrap().clone();
            // The first change that reads back as a spec of the same kind: a value `run` could
            // be given.
            let changed = candidates(&leaf, &enums).into_iter().find_map(|c| {
                let mut j = json.clone();
                *j.pointer_mut(ptr).unwrap() = c;
                serde_json::from_value::<StepSpec>(j)
                    .ok()
                    .filter(|sp| sp.kind() == kind && *sp != spec)
            });
            let changed = changed
                .unwrap_or_else(|| panic!("{kind}{ptr}: no other valid value found for {leaf}"));
            assert_ne!(
                base,
                fp(&step(changed)),
                "{kind}{ptr}: changing it must change the fingerprint"
            );
        }
    }
}

/// The secrets' digest is the one state files already hold (issue 14 item 3 moved the choice of
/// secrets into `StepSpec::secret_input`): `{"domain", "id", "env" | "url"}` hashed, for the
/// kinds that have one; no digest for the others, nor when nothing is redacted.
#[test]
fn the_secret_digest_is_unchanged_per_kind() {
    use provision_executor::fingerprint::{canonical, sha256_hex};
    use serde_json::json;
    let digest = |v: Value| Some(sha256_hex(canonical(&v).as_bytes()));
    for spec in full_specs() {
        let st = step(spec.clone());
        // The values the shadow fields held before secrets moved into the plan's table.
        let expected = match &spec {
            StepSpec::Spawn(_) => digest(json!({"domain": "provision-secret-v1", "id": st.id,
                "env": {"HF_TOKEN": "hf_secret", "LOG": "info"}})),
            StepSpec::GitClone(_) => digest(json!({"domain": "provision-secret-v1", "id": st.id,
                "url": "https://token@example.com/llama.cpp"})),
            _ => None,
        };
        assert_eq!(
            secret_digest(&st, &full_secrets(&spec)),
            expected,
            "{}",
            st.id
        );
    }
    for spec in full_specs() {
        let mut spec = spec;
        match &mut spec {
            StepSpec::Spawn(sp) => {
                sp.env.insert(s("HF_TOKEN"), s("not secret"));
            }
            StepSpec::GitClone(g) => g.repo = s("https://example.com/llama.cpp"),
            _ => {}
        }
        let st = step(spec.clone());
        assert_eq!(
            secret_digest(&st, &full_secrets(&spec)),
            None,
            "{}: no secret",
            st.id
        );
    }
}
