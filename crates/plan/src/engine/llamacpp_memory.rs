//! llama-server's memory-relevant settings, read from a pool's normalised flags (the
//! `PlannedEngine::memory_settings` of llama.cpp): its spellings, its defaults, what it reads
//! `0`, `-1`, `auto` and `all` as.

use crate::memory_settings::{BadFlag, FlashAttn, GpuLayers, MemorySettings, SplitMode};

use super::llamacpp_flags::Flag;

/// llama-server's default `--batch-size` (logical batch).
pub const DEFAULT_BATCH: u32 = 2048;
/// llama-server's default `--ubatch-size` (physical micro-batch).
pub const DEFAULT_UBATCH: u32 = 512;
/// llama-server's slots for `--parallel -1` (`auto`).
pub const AUTO_PARALLEL: u32 = 4;
/// llama-server's default KV cache type.
pub const DEFAULT_CACHE_TYPE: &str = "f16";

/// The value of the last of `names` in `flags` (normalised: repeats already resolved, but an
/// unknown flag such as `-fa` keeps its spelling beside `--flash-attn`). `Some(None)`: given
/// without a value.
fn last<'a>(flags: &'a [Flag], names: &[&str]) -> Option<(&'a str, Option<&'a str>)> {
    flags
        .iter()
        .rev()
        .find(|f| names.contains(&f.name.as_str()))
        .map(|f| (f.name.as_str(), f.value.as_deref()))
}

fn number(flags: &[Flag], name: &str, default: u32) -> Result<u32, BadFlag> {
    match last(flags, &[name]) {
        None | Some((_, None)) => Ok(default),
        Some((_, Some(v))) => match v.trim().parse::<i64>() {
            // llama.cpp reads `0`/`-1` as "the default" for the sizes it accepts them for.
            Ok(n) if n <= 0 => Ok(default),
            Ok(n) => u32::try_from(n).map_err(|_| bad(name, v, "a number up to 4294967295")),
            Err(_) => Err(bad(name, v, "a positive integer")),
        },
    }
}

fn bad(flag: &str, value: &str, expected: &str) -> BadFlag {
    BadFlag {
        flag: flag.into(),
        message: format!("`{flag} {value}`: the value is not {expected}"),
        help: format!("give `{flag}` {expected}, or remove it"),
    }
}

fn gpu_layers(flags: &[Flag]) -> Result<GpuLayers, BadFlag> {
    let Some((_, Some(v))) = last(flags, &["--n-gpu-layers"]) else {
        return Ok(GpuLayers::All);
    };
    match v.trim() {
        "" | "all" | "auto" => Ok(GpuLayers::All),
        s => match s.parse::<i64>() {
            Ok(n) if n < 0 => Ok(GpuLayers::All),
            Ok(n) => u32::try_from(n)
                .map(GpuLayers::Count)
                .map_err(|_| bad("--n-gpu-layers", v, "a layer count, `auto` or `all`")),
            Err(_) => Err(bad("--n-gpu-layers", v, "a layer count, `auto` or `all`")),
        },
    }
}

fn flash_attn(flags: &[Flag]) -> Result<FlashAttn, BadFlag> {
    match last(flags, &["--flash-attn", "-fa"]) {
        None => Ok(FlashAttn::Auto),
        // The old spelling: a bare switch.
        Some((_, None)) => Ok(FlashAttn::On),
        Some((name, Some(v))) => match v.trim() {
            "on" | "1" | "true" | "enabled" => Ok(FlashAttn::On),
            "off" | "0" | "false" | "disabled" => Ok(FlashAttn::Off),
            "auto" => Ok(FlashAttn::Auto),
            _ => Err(bad(name, v, "`on`, `off` or `auto`")),
        },
    }
}

fn split_mode(flags: &[Flag]) -> Result<SplitMode, BadFlag> {
    match last(flags, &["--split-mode"]) {
        None | Some((_, None)) => Ok(SplitMode::Layer),
        Some((name, Some(v))) => match v.trim() {
            "layer" => Ok(SplitMode::Layer),
            "row" => Ok(SplitMode::Row),
            "none" => Ok(SplitMode::None),
            _ => Err(bad(name, v, "`layer`, `row` or `none`")),
        },
    }
}

/// `--tensor-split 3,1` (llama.cpp also accepts `/` between the ratios).
fn tensor_split(flags: &[Flag]) -> Result<Option<Vec<f64>>, BadFlag> {
    let Some((name, Some(v))) = last(flags, &["--tensor-split"]) else {
        return Ok(None);
    };
    v.split([',', '/'])
        .map(|r| {
            r.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
        })
        .collect::<Option<Vec<f64>>>()
        .map(Some)
        .ok_or_else(|| bad(name, v, "a list of non-negative ratios such as `3,1`"))
}

fn cache_type(flags: &[Flag], name: &str) -> String {
    last(flags, &[name])
        .and_then(|(_, v)| v)
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| DEFAULT_CACHE_TYPE.into())
}

/// Where in the raw flag list the (last) flag `canonical` was given, under any spelling.
pub fn raw_index(raw: &[String], canonical: &str) -> Option<usize> {
    raw.iter().rposition(|t| {
        let name = t.split_once('=').map_or(t.as_str(), |(n, _)| n);
        crate::llama_flags::canonical_name(name) == canonical
    })
}

/// The settings a llama-server started with `flags` (normalised, pool fields applied) runs
/// with.
pub fn memory_settings(flags: &[Flag]) -> Result<MemorySettings, BadFlag> {
    let ctx = last(flags, &["--ctx-size"])
        .and_then(|(_, v)| v)
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|&c| c > 0);
    let parallel = match last(flags, &["--parallel"]) {
        Some((_, Some(v))) if matches!(v.trim(), "-1" | "auto") => AUTO_PARALLEL,
        _ => number(flags, "--parallel", 1)?,
    };
    Ok(MemorySettings {
        ctx,
        parallel,
        n_gpu_layers: gpu_layers(flags)?,
        batch_size: number(flags, "--batch-size", DEFAULT_BATCH)?,
        ubatch_size: number(flags, "--ubatch-size", DEFAULT_UBATCH)?,
        flash_attn: flash_attn(flags)?,
        cache_type_k: cache_type(flags, "--cache-type-k"),
        cache_type_v: cache_type(flags, "--cache-type-v"),
        tensor_split: tensor_split(flags)?,
        split_mode: split_mode(flags)?,
        main_gpu: number(flags, "--main-gpu", 0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;
    use crate::llama_flags::{normalize, FlagContext};

    fn settings(raw: &[&str]) -> Result<MemorySettings, BadFlag> {
        let raw: Vec<String> = raw.iter().map(|s| s.to_string()).collect();
        let n = normalize(
            &raw,
            FlagContext {
                backend: Backend::Cuda,
                ctx: None,
                tensor_split: None,
            },
        );
        assert!(!n.has_errors(), "{:?}", n.notes);
        memory_settings(&n.flags)
    }

    #[test]
    fn defaults_are_llama_servers() {
        let s = settings(&[]).unwrap();
        assert_eq!(
            s,
            MemorySettings {
                ctx: None,
                parallel: 1,
                n_gpu_layers: GpuLayers::Count(999),
                batch_size: 2048,
                ubatch_size: 512,
                flash_attn: FlashAttn::Auto,
                cache_type_k: "f16".into(),
                cache_type_v: "f16".into(),
                tensor_split: None,
                split_mode: SplitMode::Layer,
                main_gpu: 0,
            }
        );
    }

    #[test]
    fn every_spelling_is_read() {
        let s = settings(&[
            "-c", "8192", "-np", "-1", "-ngl", "auto", "-b", "1024", "-ub", "4096", "-fa", "-ctk",
            "q8_0", "-ctv", "q4_0", "-ts", "3/1", "-sm", "row", "-mg", "1",
        ])
        .unwrap();
        assert_eq!(s.ctx, Some(8192));
        assert_eq!(s.parallel, 4);
        assert_eq!(s.n_gpu_layers, GpuLayers::All);
        assert_eq!((s.batch_size, s.ubatch_size), (1024, 4096));
        assert_eq!(s.effective_ubatch(), 1024);
        assert_eq!(s.flash_attn, FlashAttn::On);
        assert_eq!(
            (s.cache_type_k.as_str(), s.cache_type_v.as_str()),
            ("q8_0", "q4_0")
        );
        assert_eq!(s.tensor_split, Some(vec![3.0, 1.0]));
        assert_eq!(s.split_mode, SplitMode::Row);
        assert_eq!(s.main_gpu, 1);
        let s = settings(&["--flash-attn", "on", "-fa", "off", "-ngl", "20"]).unwrap();
        assert_eq!(s.flash_attn, FlashAttn::Off, "the last spelling wins");
        assert_eq!(s.n_gpu_layers, GpuLayers::Count(20));
        assert_eq!(
            settings(&["--flash-attn=auto"]).unwrap().flash_attn,
            FlashAttn::Auto
        );
    }

    #[test]
    fn unusable_values_name_the_flag() {
        let e = settings(&["--flash-attn", "maybe"]).unwrap_err();
        assert_eq!(e.flag, "--flash-attn");
        assert!(e.message.contains("maybe"), "{}", e.message);
        assert_eq!(
            settings(&["--split-mode", "diagonal"]).unwrap_err().flag,
            "--split-mode"
        );
        assert_eq!(
            settings(&["--tensor-split", "3,x"]).unwrap_err().flag,
            "--tensor-split"
        );
    }

    #[test]
    fn raw_index_finds_any_spelling() {
        let raw: Vec<String> = ["-sm", "row", "--threads", "2", "--split-mode=none", "-fa"]
            .map(String::from)
            .to_vec();
        assert_eq!(raw_index(&raw, "--split-mode"), Some(4));
        assert_eq!(raw_index(&raw[..2], "--split-mode"), Some(0));
        assert_eq!(raw_index(&raw, "-fa"), Some(5));
        assert_eq!(raw_index(&raw, "--batch-size"), None);
    }
}
