//! What a server says, in its own log, about where it loaded the model: the layers it put on
//! the GPUs and the buffers it allocated on each device. Its engine reads it from the log
//! ([`super::RuntimeEngine::load_report`]); the probe checks that a GPU pool's server is on
//! its GPUs ([`LoadReport::on_gpus`]) and records what it allocated ([`LoadReport::memory`]).

use std::collections::BTreeMap;

use provision_plan::outputs::DeviceMemory;

/// A server's load report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The layers it put on the GPUs, when it says so.
    pub offloaded: Option<Offloaded>,
    /// It said it found no usable GPU (a build without GPU support, or no device it can use).
    pub no_gpu: bool,
    /// The buffers it allocated, by the engine's name of the device (`CUDA0`, `Host`).
    pub devices: BTreeMap<String, DeviceBuffers>,
    /// Its memory breakdown table, one row per device, when it printed one.
    pub breakdown: Vec<BreakdownRow>,
}

/// `offloaded N/M layers to GPU`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offloaded {
    pub layers: u64,
    /// The model's layers that can go to a GPU (its output layer counts as one).
    pub of: u64,
}

/// The buffers on one device, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceBuffers {
    /// Its position among the GPUs the server sees (`CUDA1`: 1); none for host memory.
    pub gpu_ordinal: Option<usize>,
    pub model: u64,
    pub kv: u64,
    pub output: u64,
    pub compute: u64,
}

impl DeviceBuffers {
    pub fn total(&self) -> u64 {
        self.model + self.kv + self.output + self.compute
    }
}

/// One row of a memory breakdown table, in MiB.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakdownRow {
    /// The device (`CUDA0`, `Host`).
    pub device: String,
    pub gpu_ordinal: Option<usize>,
    /// The device's memory and what was free (GPU rows).
    pub total_mib: Option<u64>,
    pub free_mib: Option<u64>,
    /// What the server uses there: model + context + compute.
    pub self_mib: u64,
    pub model_mib: u64,
    pub context_mib: u64,
    pub compute_mib: u64,
}

const MIB: u64 = 1024 * 1024;

impl LoadReport {
    /// Does the report say where the layers went (on a GPU, or nowhere because there is none)?
    pub fn tells_placement(&self) -> bool {
        self.no_gpu || self.offloaded.is_some()
    }

    /// The server put on its GPUs every layer it was asked to (`asked`: `--n-gpu-layers`;
    /// none: all), with its weights in a GPU buffer; else why not.
    pub fn on_gpus(&self, asked: Option<u64>) -> Result<(), String> {
        if self.no_gpu {
            return Err(
                "its log says it found no usable GPU: it runs on the CPU (a build without GPU support)"
                    .into(),
            );
        }
        let Some(Offloaded { layers, of }) = self.offloaded else {
            return Err("its log does not say that any layer was offloaded to a GPU".into());
        };
        let wanted = asked.map_or(of, |a| a.min(of));
        if layers < wanted {
            return Err(format!(
                "its log says it offloaded {layers} of {of} layers to the GPU ({wanted} asked): the rest run on the CPU"
            ));
        }
        let on_gpu = self
            .devices
            .values()
            .any(|d| d.gpu_ordinal.is_some() && d.model > 0);
        if wanted > 0 && !on_gpu && !self.devices.is_empty() {
            return Err("its log shows no model buffer on a GPU".into());
        }
        Ok(())
    }

    /// What it allocated per device: its buffers; a device with none, from the breakdown
    /// table. `gpus` are the pool's devices (nvidia-smi indices), in the order the server
    /// sees them.
    pub fn memory(&self, gpus: &[u32]) -> BTreeMap<String, DeviceMemory> {
        let gpu = |ordinal: Option<usize>| ordinal.and_then(|o| gpus.get(o).copied());
        let mut memory: BTreeMap<String, DeviceMemory> = self
            .devices
            .iter()
            .map(|(name, b)| {
                let m = DeviceMemory {
                    gpu: gpu(b.gpu_ordinal),
                    estimated_bytes: None,
                    actual_bytes: b.total(),
                    model_bytes: b.model,
                    kv_bytes: b.kv,
                    output_bytes: b.output,
                    compute_bytes: b.compute,
                };
                (name.clone(), m)
            })
            .collect();
        for row in self.breakdown.iter().filter(|r| r.self_mib > 0) {
            memory.entry(row.device.clone()).or_insert(DeviceMemory {
                gpu: gpu(row.gpu_ordinal),
                estimated_bytes: None,
                actual_bytes: row.self_mib * MIB,
                model_bytes: row.model_mib * MIB,
                kv_bytes: row.context_mib * MIB,
                output_bytes: 0,
                compute_bytes: row.compute_mib * MIB,
            });
        }
        memory
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(layers: u64, of: u64, gpu_model: u64) -> LoadReport {
        let mut devices = BTreeMap::new();
        devices.insert(
            "CUDA0".to_string(),
            DeviceBuffers {
                gpu_ordinal: Some(0),
                model: gpu_model,
                ..Default::default()
            },
        );
        LoadReport {
            offloaded: Some(Offloaded { layers, of }),
            devices,
            ..Default::default()
        }
    }

    #[test]
    fn every_asked_layer_on_a_gpu_passes_fewer_fail() {
        assert_eq!(on(33, 33, 10).on_gpus(None), Ok(()));
        assert_eq!(on(33, 33, 10).on_gpus(Some(999)), Ok(()));
        assert_eq!(on(20, 33, 10).on_gpus(Some(20)), Ok(()));
        let err = on(20, 33, 10).on_gpus(None).unwrap_err();
        assert!(err.contains("offloaded 20 of 33 layers"), "{err}");
        let err = on(33, 33, 0).on_gpus(None).unwrap_err();
        assert!(err.contains("no model buffer on a GPU"), "{err}");
        let none = LoadReport::default();
        assert!(!none.tells_placement());
        assert!(none.on_gpus(None).is_err());
        let cpu = LoadReport {
            no_gpu: true,
            ..Default::default()
        };
        assert!(cpu.on_gpus(None).unwrap_err().contains("no usable GPU"));
    }

    #[test]
    fn memory_names_the_pools_gpu_and_falls_back_to_the_table() {
        let mut report = on(3, 3, 4 * MIB);
        report.breakdown.push(BreakdownRow {
            device: "Host".into(),
            self_mib: 2,
            model_mib: 1,
            compute_mib: 1,
            ..Default::default()
        });
        report.breakdown.push(BreakdownRow {
            device: "CUDA0".into(),
            gpu_ordinal: Some(0),
            self_mib: 99,
            ..Default::default()
        });
        let m = report.memory(&[3]);
        assert_eq!(m["CUDA0"].gpu, Some(3));
        assert_eq!(m["CUDA0"].actual_bytes, 4 * MIB, "the buffers win");
        assert_eq!(m["Host"].actual_bytes, 2 * MIB);
        assert_eq!(m["Host"].gpu, None);
    }
}
