//! Property tests: plans are deterministic and independent of the config's format and pool
//! order, flag normalisation is idempotent, and shared nodes of the DAG are never duplicated.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::subsequence;
use serde_json::{json, Value};

use provision_plan::cmake_flags::{self, CmakeFlags};
use provision_plan::llama_flags::{self, to_argv, FlagContext};
use provision_plan::{Backend, Document, Plan, PlanOptions, Roots, StepSpec};

// ---- Generated configs ------------------------------------------------------------------------

const IDS: &[&str] = &["a", "b", "gpu-0", "cpu.1", "x_y", "pool7"];
/// Two repos with the same name (`llama.cpp`): their steps need disambiguated ids.
const REPOS: &[&str] = &[
    "https://github.com/ggml-org/llama.cpp.git",
    "https://github.com/someone/llama.cpp.git",
];
const REFS: &[&str] = &["b4567", "703f9e3"];
/// Two refs share the file name `a.gguf`: their resolve steps need disambiguated ids.
const MODEL_REFS: &[&str] = &[
    "hf:org/repo/a.gguf",
    "hf:org/other/a.gguf@v2",
    "./models/b.gguf",
    "c.gguf",
    "/models/d.gguf",
];
/// CMake flags valid for a GPU pool and for a CPU pool (same length: picked by index).
const CMAKE_CUDA: &[&str] = &[
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DGGML_CUDA=ON",
    "-DCMAKE_CUDA_ARCHITECTURES=86",
    "-DGGML_NATIVE=OFF",
    "-DLLAMA_CUBLAS=1",
];
const CMAKE_CPU: &[&str] = &[
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DGGML_CUDA=OFF",
    "-DGGML_AVX2=ON",
    "-DGGML_NATIVE=OFF",
    "-DCMAKE_BUILD_TYPE:STRING=Release",
];
/// Valid llama-server flags, each one list entry or a flag and its value.
const FLAGS: &[&[&str]] = &[
    &["-ngl", "10"],
    &["--n-gpu-layers", "auto"],
    &["-c", "2048"],
    &["--ctx", "4096"],
    &["--ctx-size=1024"],
    &["-np", "2"],
    &["--parallel", "3"],
    &["-t", "4"],
    &["-cb"],
    &["--no-cont-batching"],
    &["--metrics"],
    &["--webui"],
    &["--foo", "bar"],
    &["--flag-only"],
    &["--api-key", "sk-secret"],
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Source,
    Binary,
    External,
}

#[derive(Debug, Clone)]
struct GenPool {
    id: String,
    cpu: bool,
    /// Write `backend: cuda` even though it is the default.
    explicit_backend: bool,
    devices: Vec<u32>,
    replicas: u32,
    ctx: Option<u32>,
    tensor_split: Option<Vec<f64>>,
    mode: Mode,
    repo: &'static str,
    git_ref: &'static str,
    submodules: bool,
    allow_installs: bool,
    cmake: Vec<String>,
    model_ref: &'static str,
    /// The ref goes to `provisioning.model.ref` (else to the pool's `model`).
    ref_in_provisioning: bool,
    flags: Vec<String>,
    /// First fixed port, or automatic ports.
    port_base: Option<u32>,
}

impl GenPool {
    fn backend(&self) -> Backend {
        if self.cpu {
            Backend::Cpu
        } else {
            Backend::Cuda
        }
    }

    fn to_value(&self) -> Value {
        let mut pool = json!({
            "id": self.id,
            "engine": "llamacpp",
            "model": if self.ref_in_provisioning { "served-name" } else { self.model_ref },
            "devices": self.devices,
        });
        let obj = pool.as_object_mut().unwrap();
        if self.cpu {
            obj.insert("backend".into(), json!("cpu"));
        } else if self.explicit_backend {
            obj.insert("backend".into(), json!("cuda"));
        }
        if self.replicas != 1 || self.explicit_backend {
            obj.insert("replicas".into(), json!(self.replicas));
        }
        if let Some(ctx) = self.ctx {
            obj.insert("ctx".into(), json!(ctx));
        }
        if let Some(ts) = &self.tensor_split {
            obj.insert("tensor_split".into(), json!(ts));
        }
        let mut prov = serde_json::Map::new();
        match self.mode {
            Mode::Source => {
                prov.insert("mode".into(), json!("source"));
                prov.insert("allow_package_installs".into(), json!(self.allow_installs));
                prov.insert(
                    "source".into(),
                    json!({
                        "repo": self.repo,
                        "ref": self.git_ref,
                        "submodules": self.submodules,
                        "build": {"cmake_flags": self.cmake},
                    }),
                );
            }
            Mode::Binary => {
                prov.insert("mode".into(), json!("binary"));
                prov.insert(
                    "binary".into(),
                    json!({"path": "/opt/llama/bin/llama-server"}),
                );
            }
            Mode::External => {
                prov.insert("mode".into(), json!("external"));
                prov.insert(
                    "external".into(),
                    json!({"url": format!("http://10.0.0.1:{}/", self.port_base.unwrap_or(8000))}),
                );
            }
        }
        if self.ref_in_provisioning && self.mode != Mode::External {
            prov.insert("model".into(), json!({"ref": self.model_ref}));
        }
        if let (Some(base), false) = (self.port_base, self.mode == Mode::External) {
            let ports: Vec<u32> = (0..self.replicas).map(|r| base + r).collect();
            prov.insert("ports".into(), json!(ports));
        }
        prov.insert("env".into(), json!({"LLAMA_LOG_COLORS": "off"}));
        prov.insert("flags".into(), json!(self.flags));
        obj.insert("provisioning".into(), Value::Object(prov));
        pool
    }

    fn has_model(&self) -> bool {
        self.mode != Mode::External
    }
}

fn pick<T: Clone + std::fmt::Debug>(items: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(items)
}

/// A pool with a placeholder id and port.
fn pool_strategy() -> impl Strategy<Value = GenPool> {
    let shape = (
        any::<bool>(),
        any::<bool>(),
        subsequence(vec![0u32, 1, 2, 3], 1..=3).prop_shuffle(),
        1u32..=3,
        prop_oneof![Just(None), Just(Some(2048u32)), Just(Some(8192))],
        proptest::option::weighted(0.3, proptest::collection::vec(pick(&[1.0, 2.0, 0.5]), 3)),
        prop_oneof![6 => Just(Mode::Source), 1 => Just(Mode::Binary), 1 => Just(Mode::External)],
        any::<bool>(),
    );
    let build = (
        pick(REPOS),
        pick(REFS),
        any::<bool>(),
        any::<bool>(),
        subsequence(
            (0..CMAKE_CUDA.len()).collect::<Vec<_>>(),
            0..=CMAKE_CUDA.len(),
        )
        .prop_shuffle(),
        pick(MODEL_REFS),
        any::<bool>(),
        proptest::collection::vec(pick(FLAGS), 0..6),
    );
    (shape, build).prop_map(
        |(
            (cpu, explicit_backend, devices, replicas, ctx, split, mode, fixed_ports),
            (repo, git_ref, submodules, allow_installs, cmake, model_ref, in_prov, flags),
        )| {
            let table = if cpu { CMAKE_CPU } else { CMAKE_CUDA };
            GenPool {
                id: String::new(),
                cpu,
                explicit_backend,
                devices: if cpu { vec![] } else { devices.clone() },
                replicas: if mode == Mode::External { 1 } else { replicas },
                ctx,
                tensor_split: split.filter(|_| !cpu).map(|s| s[..devices.len()].to_vec()),
                mode,
                repo,
                git_ref,
                submodules,
                allow_installs,
                cmake: cmake.iter().map(|&i| table[i].to_string()).collect(),
                model_ref,
                ref_in_provisioning: in_prov,
                flags: flags
                    .iter()
                    .flat_map(|f| f.iter().map(|s| s.to_string()))
                    .collect(),
                port_base: fixed_ports.then_some(0),
            }
        },
    )
}

/// 1–4 pools with unique ids and, where fixed, unique ports.
fn config_strategy() -> impl Strategy<Value = Vec<GenPool>> {
    (1usize..=4)
        .prop_flat_map(|n| {
            (
                subsequence(IDS.to_vec(), n).prop_shuffle(),
                proptest::collection::vec(pool_strategy(), n),
            )
        })
        .prop_map(|(ids, mut pools)| {
            for (i, (pool, id)) in pools.iter_mut().zip(ids).enumerate() {
                pool.id = id.to_string();
                if pool.port_base.is_some() {
                    pool.port_base = Some(9000 + 10 * i as u32);
                }
            }
            pools
        })
}

fn config_value(pools: &[GenPool]) -> Value {
    json!({"pools": pools.iter().map(GenPool::to_value).collect::<Vec<_>>()})
}

fn opts(pool: Option<&str>) -> PlanOptions {
    PlanOptions {
        roots: Roots {
            cache: "/cache".into(),
            runtime: "/run".into(),
            config_dir: "/config".into(),
        },
        pool: pool.map(str::to_string),
    }
}

fn plan_text(file: &str, text: &str, pool: Option<&str>) -> Plan {
    let doc = Document::parse(file, text.to_string()).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let valid = provision_plan::validate(&doc).unwrap_or_else(|e| panic!("{e}\n{text}"));
    provision_plan::plan(&valid, &opts(pool)).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn yaml(value: &Value) -> String {
    serde_norway::to_string(value).unwrap()
}

/// `cases` cases; failures are shrunk and reported, not persisted to a regressions file.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

/// The plan's steps with each vram-fit's ledger (the pools placed before it, and the
/// dependencies on their models) taken out.
fn without_ledger(plan: &Plan) -> Vec<provision_plan::Step> {
    let mut steps = plan.steps.clone();
    for s in &mut steps {
        if let StepSpec::VramFit(v) = &mut s.spec {
            let own = [v.model.to_string(), "gpu-check".to_string()];
            s.deps.retain(|d| own.contains(d));
            v.placed_before.clear();
        }
    }
    steps
}

/// Each vram-fit places after it exactly the GPU pools before it in config order that share a
/// device with it, and waits for their models.
fn ledger_follows_config_order(plan: &Plan) -> Result<(), TestCaseError> {
    let fits: Vec<&provision_plan::step::VramFit> = plan
        .pools
        .iter()
        .filter_map(|p| {
            plan.steps.iter().find_map(|s| match &s.spec {
                StepSpec::VramFit(v) if v.pool == p.id => Some(v),
                _ => None,
            })
        })
        .collect();
    for (i, v) in fits.iter().enumerate() {
        let got: Vec<&str> = v.placed_before.iter().map(|p| p.pool.as_str()).collect();
        let want: Vec<&str> = fits[..i]
            .iter()
            .filter(|e| e.devices.iter().any(|d| v.devices.contains(d)))
            .map(|e| e.pool.as_str())
            .collect();
        prop_assert_eq!(got, want, "vram-fit:{}", v.pool);
    }
    Ok(())
}

// ---- 1. Determinism ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn plans_are_deterministic_and_format_independent(pools in config_strategy()) {
        let value = config_value(&pools);
        let yaml_text = yaml(&value);
        let first = plan_text("pools.yaml", &yaml_text, None).to_json();
        let second = plan_text("pools.yaml", &yaml_text, None).to_json();
        prop_assert_eq!(&first, &second);

        // The same config as JSON (in a file named .yaml: the content decides) plans the same.
        let json_text = serde_json::to_string_pretty(&value).unwrap();
        prop_assert_eq!(&plan_text("pools.yaml", &json_text, None).to_json(), &first);
        let compact = serde_json::to_string(&value).unwrap();
        prop_assert_eq!(&plan_text("pools.json", &compact, None).to_json(), &first);
    }

    /// Except the device ledger: GPU pools sharing devices are placed in config order, so
    /// each vram-fit names (and waits for the models of) the pools before it.
    #[test]
    fn steps_do_not_depend_on_pool_order(
        (pools, order) in config_strategy()
            .prop_flat_map(|p| { let n = p.len(); (Just(p), Just((0..n).collect::<Vec<_>>()).prop_shuffle()) })
    ) {
        let plan = plan_text("a.yaml", &yaml(&config_value(&pools)), None);
        let shuffled: Vec<GenPool> = order.iter().map(|&i| pools[i].clone()).collect();
        let other = plan_text("b.yaml", &yaml(&config_value(&shuffled)), None);
        prop_assert_eq!(
            serde_json::to_string_pretty(&without_ledger(&plan)).unwrap(),
            serde_json::to_string_pretty(&without_ledger(&other)).unwrap()
        );
        for p in [&plan, &other] {
            ledger_follows_config_order(p)?;
        }
        for summary in &plan.pools {
            let same = other.pools.iter().find(|p| p.id == summary.id).unwrap();
            prop_assert_eq!(summary, same);
        }
    }
}

// ---- 2. Normalisation is idempotent -----------------------------------------------------------

/// Raw llama-server flag material: aliases, repeats, conflicting pairs, unknown flags with and
/// without values, and mistakes (owned flags, stray values, bad values, missing values).
const RAW_FLAG_ATOMS: &[&[&str]] = &[
    &["-ngl", "10"],
    &["--ngl", "all"],
    &["--gpu-layers", "auto"],
    &["--n-gpu-layers", "0"],
    &["-c", "2048"],
    &["--ctx", "4096"],
    &["--context=512"],
    &["--ctx-size", "100"],
    &["-np", "2"],
    &["--parallel=4"],
    &["-t", "4"],
    &["-tb", "-1"],
    &["-cb"],
    &["--cont-batching"],
    &["--no-cont-batching"],
    &["-nocb"],
    &["--metrics"],
    &["--webui"],
    &["--ui"],
    &["--no-webui"],
    &["--no-ui"],
    &["-ts", "1,2"],
    &["--alias", "m"],
    &["--alias"],
    &["--api-key", "sk-1"],
    &["-hft", "hf_x"],
    &["--foo", "bar"],
    &["--foo", "baz"],
    &["--foo"],
    &["--bar=1"],
    &["--bar=x=y"],
    &["--empty="],
    &["-x"],
    &["-x", "-5"],
    &["-fa", "on"],
    &["--port", "9000"],
    &["--host=0.0.0.0"],
    &["-m", "x.gguf"],
    &["stray"],
    &["--metrics=1"],
    &["-np", "two"],
    &["--threads"],
    &["-"],
];

fn raw_flags() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(pick(RAW_FLAG_ATOMS), 0..12).prop_map(|atoms| {
        atoms
            .iter()
            .flat_map(|a| a.iter().map(|s| s.to_string()))
            .collect()
    })
}

fn flag_context() -> impl Strategy<Value = (bool, Option<u32>, Option<Vec<f64>>)> {
    (
        any::<bool>(),
        prop_oneof![Just(None), Just(Some(512u32)), Just(Some(8192))],
        prop_oneof![
            Just(None),
            Just(Some(vec![1.0])),
            Just(Some(vec![3.0, 1.0])),
            Just(Some(vec![0.5, 0.25, 0.125])),
        ],
    )
}

/// Raw CMake arguments: definitions (with types, spacing, two-item `-D NAME=VALUE`, CUDA
/// aliases, repeats) and other arguments, some of them mistakes.
fn raw_cmake() -> impl Strategy<Value = Vec<String>> {
    const NAMES: &[&str] = &[
        "CMAKE_BUILD_TYPE",
        "LLAMA_BUILD_SERVER",
        "GGML_CUDA",
        "LLAMA_CUBLAS",
        "LLAMA_CUDA",
        "GGML_CUBLAS",
        "CMAKE_CUDA_ARCHITECTURES",
        "GGML_NATIVE",
        "GGML_AVX2",
    ];
    const VALUES: &[&str] = &[
        "ON", "OFF", "1", "0", "Release", "Debug", "86;89", "", "a=b", " x",
    ];
    const OTHER: &[&[&str]] = &[
        &["-Wno-dev"],
        &["--fresh"],
        &["-G", "Ninja"],
        &["-GNinja"],
        &["-B/tmp/x"],
        &["-S", "."],
        &["-DNO_EQUALS"],
        &["-D:BOOL=ON"],
        &["-D"],
    ];
    let def = (
        pick(NAMES),
        pick(&["", ":BOOL", ":STRING"]),
        pick(VALUES),
        0..3u8,
    )
        .prop_map(|(name, ty, value, form)| match form {
            0 => vec![format!("-D{name}{ty}={value}")],
            1 => vec!["-D".to_string(), format!("{name}{ty}={value}")],
            _ => vec![format!("  -D{name}{ty}={value} ")],
        });
    let other = pick(OTHER).prop_map(|a| a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    proptest::collection::vec(prop_oneof![3 => def, 1 => other], 0..10)
        .prop_map(|items| items.concat())
}

/// Distinct definitions (one per name), in some order.
fn distinct_defines() -> impl Strategy<Value = (Vec<String>, Vec<String>)> {
    const NAMES: &[&str] = &[
        "CMAKE_BUILD_TYPE",
        "LLAMA_BUILD_SERVER",
        "GGML_CUDA",
        "LLAMA_CUBLAS",
        "CMAKE_CUDA_ARCHITECTURES",
        "GGML_NATIVE",
        "GGML_AVX2",
        "GGML_BLAS",
    ];
    subsequence(NAMES.to_vec(), 0..=NAMES.len())
        .prop_flat_map(|names| {
            let n = names.len();
            (
                Just(names),
                proptest::collection::vec(pick(&["ON", "OFF", "1", "Release", "86"]), n),
                proptest::collection::vec(pick(&["", ":BOOL", ":STRING"]), n),
            )
        })
        .prop_map(|(names, values, types)| {
            names
                .iter()
                .zip(values)
                .zip(types)
                .map(|((n, v), t)| format!("-D{n}{t}={v}"))
                .collect::<Vec<_>>()
        })
        .prop_flat_map(|defs| (Just(defs.clone()), Just(defs).prop_shuffle()))
}

fn backend(cpu: bool) -> Backend {
    if cpu {
        Backend::Cpu
    } else {
        Backend::Cuda
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn llama_flag_normalisation_is_idempotent(raw in raw_flags(), (cpu, ctx, split) in flag_context()) {
        let cx = FlagContext { backend: backend(cpu), ctx, tensor_split: split.as_deref() };
        let once = llama_flags::normalize(&raw, cx);
        let twice = llama_flags::normalize(&to_argv(&once.flags), cx);
        prop_assert_eq!(&twice.flags, &once.flags);
        prop_assert!(twice.notes.is_empty(), "{:?}", twice.notes);
    }

    #[test]
    fn cmake_normalisation_is_idempotent(raw in raw_cmake(), cpu in any::<bool>()) {
        let (once, _) = cmake_flags::normalize(&raw, backend(cpu));
        let (twice, _) = cmake_flags::normalize(&once.to_args(), backend(cpu));
        prop_assert_eq!(twice, once);
    }

    #[test]
    fn cmake_normalisation_ignores_the_order_of_distinct_definitions(
        (defs, shuffled) in distinct_defines(),
        extra in proptest::collection::vec(pick(&["-Wno-dev", "--fresh"]), 0..3),
        cpu in any::<bool>(),
    ) {
        let with = |d: &[String]| -> Vec<String> {
            d.iter().cloned().chain(extra.iter().map(|s| s.to_string())).collect()
        };
        let (a, _) = cmake_flags::normalize(&with(&defs), backend(cpu));
        let (b, _) = cmake_flags::normalize(&with(&shuffled), backend(cpu));
        prop_assert_eq!(a, b);
    }
}

// ---- 3. Shared nodes are never duplicated -----------------------------------------------------

#[allow(clippy::too_many_lines)] // a test: one scenario, read top to bottom
fn check_structure(pools: &[GenPool], plan: &Plan) -> Result<(), TestCaseError> {
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    prop_assert_eq!(unique.len(), ids.len(), "duplicate step ids: {:?}", ids);
    // Every id is a StepId of its step's kind, and reads back to the same string.
    for step in &plan.steps {
        let id = provision_plan::StepId::parse(&step.id);
        prop_assert_eq!(id.as_ref().map(|i| i.kind()), Some(step.spec.step_kind()));
        prop_assert_eq!(id.map(|i| i.to_string()), Some(step.id.clone()));
    }

    // Every dep exists and comes earlier.
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for step in &plan.steps {
        for dep in &step.deps {
            prop_assert!(
                unique.contains(dep.as_str()),
                "{} depends on unknown {}",
                step.id,
                dep
            );
            prop_assert!(
                seen.contains(dep.as_str()),
                "{} comes before its dep {}",
                step.id,
                dep
            );
        }
        seen.insert(&step.id);
    }

    // Pool summaries list existing steps, in plan order, and agree with each step's pools.
    for summary in &plan.pools {
        let positions: Vec<usize> = summary
            .steps
            .iter()
            .map(|id| ids.iter().position(|s| s == id))
            .collect::<Option<_>>()
            .ok_or_else(|| TestCaseError::fail(format!("{} lists an unknown step", summary.id)))?;
        prop_assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "{:?}",
            summary.steps
        );
    }
    for step in &plan.steps {
        let listed_by: BTreeSet<&str> = plan
            .pools
            .iter()
            .filter(|p| p.steps.contains(&step.id))
            .map(|p| p.id.as_str())
            .collect();
        let step_pools: BTreeSet<&str> = step.pools.iter().map(String::as_str).collect();
        prop_assert_eq!(step_pools, listed_by, "{}", step.id);
    }

    // Shared nodes: one per distinct content.
    let source: Vec<&GenPool> = pools.iter().filter(|p| p.mode == Mode::Source).collect();
    let want_clones: BTreeSet<(&str, &str)> = source.iter().map(|p| (p.repo, p.git_ref)).collect();
    let want_builds: BTreeSet<(&str, &str, CmakeKey)> = source
        .iter()
        .map(|p| {
            (
                p.repo,
                p.git_ref,
                cmake_key(&cmake_flags::normalize(&p.cmake, p.backend()).0),
            )
        })
        .collect();
    let want_models: BTreeSet<&str> = pools
        .iter()
        .filter(|p| p.has_model())
        .map(|p| p.model_ref)
        .collect();

    let mut clones = BTreeSet::new();
    let mut clone_dirs = BTreeSet::new();
    let mut configures = BTreeSet::new();
    let mut build_dirs = BTreeSet::new();
    let mut models = BTreeSet::new();
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for step in &plan.steps {
        *count.entry(step.kind()).or_default() += 1;
        match &step.spec {
            StepSpec::GitClone(g) => {
                clones.insert((g.repo.clone(), g.git_ref.clone()));
                clone_dirs.insert(g.dir.clone());
            }
            StepSpec::CmakeConfigure(c) => {
                configures.insert((c.source_dir.clone(), c.defines.clone()));
            }
            StepSpec::CmakeBuild(b) => {
                build_dirs.insert(b.build_dir.clone());
            }
            StepSpec::ModelResolve(m) => {
                models.insert(m.model_ref.clone());
            }
            _ => {}
        }
    }
    let n = |kind: &str| count.get(kind).copied().unwrap_or(0);
    let owned = |set: &BTreeSet<(&str, &str)>| -> BTreeSet<(String, String)> {
        set.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    prop_assert_eq!(&clones, &owned(&want_clones));
    prop_assert_eq!(n("git-clone"), want_clones.len());
    prop_assert_eq!(
        clone_dirs.len(),
        want_clones.len(),
        "clones share a directory"
    );
    prop_assert_eq!(n("cmake-configure"), want_builds.len());
    prop_assert_eq!(
        configures.len(),
        want_builds.len(),
        "configures share (source_dir, defines)"
    );
    prop_assert_eq!(n("cmake-build"), want_builds.len());
    prop_assert_eq!(
        build_dirs.len(),
        want_builds.len(),
        "builds share a directory"
    );
    prop_assert_eq!(
        models,
        want_models
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
    prop_assert_eq!(n("model-resolve"), want_models.len());
    prop_assert_eq!(n("preflight-tools"), usize::from(!source.is_empty()));
    let gpu = pools.iter().any(|p| !p.cpu && p.mode != Mode::External);
    prop_assert_eq!(n("gpu-check"), usize::from(gpu));

    // Per replica: its own spawn (unless external), probe and handoff.
    let replicas: u32 = pools.iter().map(|p| p.replicas).sum();
    let spawned: u32 = pools
        .iter()
        .filter(|p| p.mode != Mode::External)
        .map(|p| p.replicas)
        .sum();
    prop_assert_eq!(n("spawn") as u32, spawned);
    prop_assert_eq!(n("probe") as u32, replicas);
    prop_assert_eq!(n("handoff") as u32, replicas);
    for p in pools {
        let summary = plan.pools.iter().find(|s| s.id == p.id).unwrap();
        for r in 0..p.replicas {
            let mut kinds = vec!["probe", "handoff"];
            if p.mode != Mode::External {
                kinds.push("spawn");
            }
            for kind in kinds {
                let id = format!("{kind}:{}/r{r}", p.id);
                let step = plan
                    .step(&id)
                    .ok_or_else(|| TestCaseError::fail(format!("no step {id}")))?;
                prop_assert_eq!(step.kind(), kind);
                prop_assert_eq!(&step.pools, &vec![p.id.clone()]);
                prop_assert!(summary.steps.contains(&id));
            }
        }
    }
    Ok(())
}

type CmakeKey = (BTreeMap<String, String>, Vec<String>);

fn cmake_key(c: &CmakeFlags) -> CmakeKey {
    (c.defines.clone(), c.extra.clone())
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn shared_nodes_are_never_duplicated(pools in config_strategy()) {
        let text = yaml(&config_value(&pools));
        let plan = plan_text("pools.yaml", &text, None);
        check_structure(&pools, &plan)?;
    }

    #[test]
    fn planning_one_pool_keeps_its_step_ids(pools in config_strategy(), which in any::<prop::sample::Index>()) {
        let text = yaml(&config_value(&pools));
        let full = plan_text("pools.yaml", &text, None);
        let chosen = &pools[which.index(pools.len())];
        let one = plan_text("pools.yaml", &text, Some(&chosen.id));
        check_structure(std::slice::from_ref(chosen), &one)?;
        let in_full: BTreeSet<&String> =
            full.pools.iter().find(|p| p.id == chosen.id).unwrap().steps.iter().collect();
        let in_one: BTreeSet<&String> = one.steps.iter().map(|s| &s.id).collect();
        prop_assert_eq!(in_one, in_full);
    }
}
