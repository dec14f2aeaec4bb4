//! llama-server's load report, read from its log (llama.cpp's side of
//! [`super::load_report`]). The lines, as llama.cpp prints them (at `--log-verbosity 4` in
//! recent builds, by default in older ones; a timestamp and level may come first):
//!
//! - `warning: no usable GPU found, --gpu-layers option will be ignored` (a build without GPU
//!   support given `-ngl`)
//! - `load_tensors: offloaded 33/33 layers to GPU` (`llm_load_tensors:` in older builds)
//! - `load_tensors:        CUDA0 model buffer size =  4403.49 MiB` (older: `CUDA0 buffer size`),
//!   `llama_kv_cache:      CUDA0 KV buffer size = …`, `llama_context:  CUDA_Host  output buffer
//!   size = …`, `sched_reserve:      CUDA0 compute buffer size = …`: one line per buffer type;
//!   `CUDA<n>` is a GPU, `CPU`, `CPU_Mapped`, `CPU_REPACK`, `CUDA_Host` are host memory
//! - `common_memory_breakdown_print: |   - CUDA0 (RTX 3090) | 24135 = 20000 + (4000 = 3500 + 300
//!   + 200) + 135 |`, `|   - Host | 281 = 281 + 0 + 0 |`: the table, in MiB

use super::load_report::{BreakdownRow, DeviceBuffers, LoadReport, Offloaded};

/// The most of a log read for its load report: the report comes first, before the server
/// listens; what follows is requests.
pub const REPORT_BYTES: u64 = 8 << 20;

/// The load report in `log`.
pub fn parse_load_report(log: &str) -> LoadReport {
    let mut report = LoadReport::default();
    for line in log.lines() {
        if line.contains("no usable GPU found") {
            report.no_gpu = true;
        } else if let Some(o) = offloaded(line) {
            report.offloaded = Some(o);
        } else if let Some((name, kind, bytes)) = buffer(line) {
            let device = report
                .devices
                .entry(device_name(name))
                .or_insert_with(|| DeviceBuffers {
                    gpu_ordinal: gpu_ordinal(name),
                    ..Default::default()
                });
            match kind {
                "model" => device.model += bytes,
                "KV" | "RS" => device.kv += bytes,
                "output" => device.output += bytes,
                "compute" => device.compute += bytes,
                _ => {}
            }
        } else if let Some(row) = breakdown_row(line) {
            if !report.breakdown.iter().any(|r| r.device == row.device) {
                report.breakdown.push(row);
            }
        }
    }
    report
}

/// `… offloaded N/M layers to GPU`.
fn offloaded(line: &str) -> Option<Offloaded> {
    let rest = &line[line.find("offloaded ")? + "offloaded ".len()..];
    let (counts, tail) = rest.split_once(' ')?;
    if !tail.starts_with("layers to GPU") {
        return None;
    }
    let (layers, of) = counts.split_once('/')?;
    Some(Offloaded {
        layers: layers.parse().ok()?,
        of: of.parse().ok()?,
    })
}

/// `<function>: <buffer> [<kind>] buffer size = <x> MiB`: the buffer type's name, the kind
/// (`model` when the line names none, as older builds print the weights), the bytes.
fn buffer(line: &str) -> Option<(&str, &str, u64)> {
    let (head, size) = line.split_once(" buffer size = ")?;
    let mib: f64 = size.split_whitespace().next()?.parse().ok()?;
    if !size.contains("MiB") {
        return None;
    }
    let words = &head[head.rfind(':')? + 1..];
    let words: Vec<&str> = words.split_whitespace().collect();
    let (name, kind) = match words.as_slice() {
        [name] => (*name, "model"),
        [name, kind] => (*name, *kind),
        _ => return None,
    };
    Some((name, kind, (mib * 1024.0 * 1024.0).round() as u64))
}

/// `CUDA1` → 1; host buffers (`CUDA_Host`, `CPU…`) have none.
fn gpu_ordinal(name: &str) -> Option<usize> {
    let digits: String = name
        .strip_prefix("CUDA")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The device a buffer type is on: `CUDA0` (also for `CUDA0_Split`), else `Host` for host
/// memory, else the name as printed (another backend's device).
fn device_name(name: &str) -> String {
    match gpu_ordinal(name) {
        Some(n) => format!("CUDA{n}"),
        None if name.starts_with("CPU") || name.ends_with("_Host") => "Host".into(),
        None => name.to_string(),
    }
}

/// A device row of `memory breakdown [MiB]`: `|   - CUDA0 (RTX 3090) | 24135 = 20000 + (4000 =
/// 3500 + 300 + 200) + 135 |` or `|   - Host | 281 = 281 + 0 + 0 |`.
fn breakdown_row(line: &str) -> Option<BreakdownRow> {
    if !line.contains("common_memory_breakdown_print") {
        return None;
    }
    let mut cells = line.split('|').skip(1);
    let label = cells.next()?.trim().strip_prefix("- ")?;
    let numbers: Vec<i64> = cells
        .next()?
        .split(|c: char| !(c.is_ascii_digit() || c == '-'))
        .filter_map(|n| n.parse().ok())
        .collect();
    let name = label.split(" (").next()?.trim();
    let device = device_name(name);
    let n = |i: usize| numbers.get(i).map(|v| (*v).max(0) as u64);
    let row = match numbers.len() {
        7 => BreakdownRow {
            device,
            gpu_ordinal: gpu_ordinal(name),
            total_mib: n(0),
            free_mib: n(1),
            self_mib: n(2)?,
            model_mib: n(3)?,
            context_mib: n(4)?,
            compute_mib: n(5)?,
        },
        4 => BreakdownRow {
            device,
            gpu_ordinal: gpu_ordinal(name),
            total_mib: None,
            free_mib: None,
            self_mib: n(0)?,
            model_mib: n(1)?,
            context_mib: n(2)?,
            compute_mib: n(3)?,
        },
        _ => return None,
    };
    Some(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPU_LOG: &str = "\
0.00.003.531 I cmn  common_param:   - CUDA0   : NVIDIA GeForce RTX 3090 (24135 MiB, 23700 MiB free)
0.00.006.641 I load_tensors: loading model tensors, this can take a while... (load_mode = mmap)
0.00.006.700 I load_tensors: offloading output layer to GPU
0.00.006.700 I load_tensors: offloading 32 repeating layers to GPU
0.00.006.701 I load_tensors: offloaded 33/33 layers to GPU
0.00.006.957 I load_tensors:        CUDA0 model buffer size =  4403.49 MiB
0.00.006.958 I load_tensors:        CUDA1 model buffer size =  1000.00 MiB
0.00.006.959 I load_tensors:   CPU_Mapped model buffer size =   281.81 MiB
0.00.007.371 I llama_context:  CUDA_Host  output buffer size =     0.49 MiB
0.00.007.459 I llama_kv_cache:      CUDA0 KV buffer size =  1024.00 MiB
0.00.007.534 I llama_kv_cache: size = 1024.00 MiB (  8192 cells,  32 layers,  1/1 seqs), K (f16):  512.00 MiB, V (f16):  512.00 MiB
0.00.008.633 I sched_reserve:      CUDA0 compute buffer size =   560.00 MiB
0.00.008.634 I sched_reserve:  CUDA_Host compute buffer size =    24.01 MiB
0.00.009.000 I common_memory_breakdown_print: | memory breakdown [MiB] | total   free    self   model   context   compute    unaccounted |
0.00.009.001 I common_memory_breakdown_print: |   - CUDA0 (RTX 3090)   | 24135 = 17000 + ( 5987 =  4403 +    1024 +     560) +         -852 |
0.00.009.002 I common_memory_breakdown_print: |   - Host               |                  305 =   281 +       0 +      24                |
";

    #[test]
    fn a_gpu_load_report_gives_layers_and_buffers_per_device() {
        let r = parse_load_report(GPU_LOG);
        assert_eq!(r.offloaded, Some(Offloaded { layers: 33, of: 33 }));
        assert!(!r.no_gpu);
        let cuda0 = &r.devices["CUDA0"];
        assert_eq!(cuda0.gpu_ordinal, Some(0));
        assert_eq!(cuda0.model, (4403.49f64 * 1048576.0).round() as u64);
        assert_eq!(cuda0.kv, 1024 << 20);
        assert_eq!(cuda0.compute, 560 << 20);
        assert_eq!(r.devices["CUDA1"].gpu_ordinal, Some(1));
        let host = &r.devices["Host"];
        assert_eq!(host.gpu_ordinal, None);
        assert_eq!(host.output, (0.49f64 * 1048576.0).round() as u64);
        assert_eq!(host.compute, (24.01f64 * 1048576.0).round() as u64);
        assert_eq!(r.breakdown.len(), 2, "{:?}", r.breakdown);
        let row = &r.breakdown[0];
        assert_eq!(
            (
                row.device.as_str(),
                row.total_mib,
                row.free_mib,
                row.self_mib,
                row.model_mib
            ),
            ("CUDA0", Some(24135), Some(17000), 5987, 4403)
        );
        assert_eq!(
            (r.breakdown[1].self_mib, r.breakdown[1].compute_mib),
            (305, 24)
        );
        assert_eq!(r.on_gpus(None), Ok(()));
    }

    #[test]
    fn older_builds_lines_are_read_too() {
        let old = "llm_load_tensors: offloaded 20/33 layers to GPU\nllm_load_tensors:      CUDA0 buffer size =  2000.00 MiB\nllm_load_tensors:        CPU buffer size =  1200.00 MiB\n";
        let r = parse_load_report(old);
        assert_eq!(r.offloaded, Some(Offloaded { layers: 20, of: 33 }));
        assert_eq!(r.devices["CUDA0"].model, 2000 << 20);
        assert_eq!(r.devices["Host"].model, 1200 << 20);
        assert!(r.on_gpus(None).is_err());
        assert_eq!(r.on_gpus(Some(20)), Ok(()));
    }
}
