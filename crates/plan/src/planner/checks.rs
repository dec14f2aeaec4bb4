//! The checks the selected pools share: one preflight-tools step with every tool any source
//! pool needs, and one gpu-check step over every device any GPU pool uses.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Backend, ProvisioningMode};
use crate::step::ToolRequirement;
use crate::step_id::StepId;
use crate::validate::PoolInput;

use super::names::Names;

/// Shared checks, merged over the selected pools.
pub(super) struct Checks {
    pub(super) tools: Vec<ToolRequirement>,
    pub(super) allow_installs: bool,
    pub(super) gpu_devices: BTreeSet<u32>,
    /// Whether each clone (by id) fetches submodules.
    pub(super) submodules: BTreeMap<String, bool>,
    /// The preflight-tools step's id, when a pool needs tools.
    pub(super) preflight: Option<String>,
    /// The gpu-check step's id, when a pool uses GPUs.
    pub(super) gpu_check: Option<String>,
}

impl Checks {
    pub(super) fn of(selected: &[&PoolInput], names: &Names) -> Self {
        let mut tools: Vec<ToolRequirement> = Vec::new();
        let mut allow_installs = true;
        let mut gpu_devices: BTreeSet<u32> = BTreeSet::new();
        let mut submodules: BTreeMap<String, bool> = BTreeMap::new();
        for input in selected {
            let prov = &input.pool.provisioning;
            if prov.mode == ProvisioningMode::Source {
                allow_installs &= prov.allow_package_installs;
                let generator = prov
                    .source
                    .as_ref()
                    .and_then(|s| s.build.generator.as_deref());
                for (name, any_of, why) in required_tools(input.pool.backend, generator) {
                    let known = tools.iter().any(|t| {
                        t.name == name && t.any_of.iter().eq(any_of.iter()) && t.needed_for == why
                    });
                    if !known {
                        tools.push(ToolRequirement {
                            name: name.into(),
                            any_of: any_of.iter().map(|s| s.to_string()).collect(),
                            needed_for: why.into(),
                        });
                    }
                }
                if let (Some((base, key)), Some(s)) =
                    (&names.keys(&input.pool.id).clone, &prov.source)
                {
                    *submodules.entry(names.clones.id(base, key)).or_default() |= s.submodules;
                }
            }
            if input.pool.backend == Backend::Cuda && prov.mode != ProvisioningMode::External {
                gpu_devices.extend(&input.pool.devices);
            }
        }
        let preflight = (!tools.is_empty()).then(|| String::from(StepId::PreflightTools));
        let gpu_check = (!gpu_devices.is_empty()).then(|| String::from(StepId::GpuCheck));

        Checks {
            tools,
            allow_installs,
            gpu_devices,
            submodules,
            preflight,
            gpu_check,
        }
    }
}

type ToolSpec = (&'static str, &'static [&'static str], &'static str);

fn required_tools(backend: Backend, generator: Option<&str>) -> Vec<ToolSpec> {
    let mut tools: Vec<ToolSpec> = vec![
        ("git", &["git"], "git-clone"),
        ("cmake", &["cmake"], "cmake-configure, cmake-build"),
        ("C compiler", &["cc", "gcc", "clang"], "cmake-build"),
        ("C++ compiler", &["c++", "g++", "clang++"], "cmake-build"),
    ];
    tools.push(match generator {
        Some(g) if g.starts_with("Ninja") => {
            ("build tool", &["ninja"], "cmake-build (generator Ninja)")
        }
        Some(_) => (
            "build tool",
            &["make"],
            "cmake-build (generator Unix Makefiles)",
        ),
        None => ("build tool", &["ninja", "make"], "cmake-build"),
    });
    if backend == Backend::Cuda {
        tools.push((
            "CUDA compiler",
            &["nvcc"],
            "cmake-build with GGML_CUDA=ON (PATH, then /usr/local/cuda, /opt/cuda, /usr/local/cuda-*)",
        ));
    }
    tools
}
