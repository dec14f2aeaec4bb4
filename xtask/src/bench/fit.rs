//! Figure 9: the memory estimate against what the real CPU llama-server allocates. Each
//! generated model ([`super::fit_models`]) is served at several contexts, with flash attention
//! off and on; the server's own load report (`-lv 4`: its model, KV, output and compute
//! buffers on `Host`) is the actual, read as provision's probe reads it
//! (`provision_steps_spawn`'s llama.cpp load report parser).
//!
//! What is compared (a CPU server keeps everything in host memory, one device):
//! - estimated = the estimator for one device holding every layer (weights of the layers and
//!   the output layer, KV cache, compute buffer) plus the token embeddings, which llama.cpp
//!   keeps in host memory: exactly what `export-k8s` asks of a CPU pool's host, less the
//!   safety margin. The margin (512 MiB + 5 %, for a CUDA context) is a second column.
//! - actual = every buffer the server reports on `Host`: model (`CPU_Mapped`, `CPU_REPACK`),
//!   KV, output (the logits of one sequence) and compute.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use provision_steps_model::estimate::{estimate, kv_type_bytes, FitInput, GpuLayers};
use provision_steps_model::vram_fit::attention_flags;
use provision_steps_model::ModelInfo;
use provision_steps_spawn::engine::llamacpp_load::parse_load_report;
use provision_steps_spawn::engine::load_report::DeviceBuffers;

use std::collections::BTreeSet;

use super::fit_models::FitModel;
use super::harness::{expand, health, steps, Provision};
use super::stats::Samples;
use super::table::Row;

/// How long one server may take to answer `/health` 200.
const READY_WITHIN: Duration = Duration::from_secs(300);

/// One model at one context.
#[derive(Debug, Clone)]
pub struct Case {
    pub model: String,
    pub kind: &'static str,
    pub weight_type: &'static str,
    pub file_bytes: u64,
    pub ctx: u64,
    pub flash_attn: bool,
    /// What the log says flash attention resolved to (`enabled`, `disabled`), when it says.
    pub fa_logged: Option<String>,
    pub est: Terms,
    /// With the safety margin.
    pub est_need: u64,
    pub actual: DeviceBuffers,
    /// Of the actual model buffer: the `CPU_REPACK` copy of the quantised matrices (the rest
    /// is `CPU_Mapped`, the file's tensor data).
    pub repacked: u64,
    pub ready_ms: f64,
}

/// The estimate's terms, in bytes, as compared with the server's buffers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Terms {
    /// Layers, output layer and token embeddings.
    pub weights: u64,
    pub kv: u64,
    pub compute: u64,
}

impl Terms {
    pub fn total(&self) -> u64 {
        self.weights + self.kv + self.compute
    }
}

impl Case {
    /// Estimate (no margin) ÷ actual.
    pub fn ratio(&self) -> f64 {
        self.est.total() as f64 / self.actual.total() as f64
    }

    pub fn ratio_with_margin(&self) -> f64 {
        self.est_need as f64 / self.actual.total() as f64
    }
}

/// The argv of one measured server (after the binary).
pub fn server_args(model: &Path, ctx: u64, port: u16, flash_attn: bool) -> Vec<String> {
    let mut a: Vec<String> = vec!["--model".into(), model.display().to_string()];
    for (k, v) in [
        ("-lv", "4"),
        ("-ngl", "0"),
        ("--ctx-size", &ctx.to_string()),
        ("--parallel", "1"),
        ("--host", "127.0.0.1"),
        ("--port", &port.to_string()),
        ("--threads", "2"),
        ("--flash-attn", if flash_attn { "on" } else { "off" }),
    ] {
        a.push(k.into());
        a.push(v.into());
    }
    // The warm-up decode changes no buffer (they are reserved before it) and takes seconds on
    // a 2 GB model.
    a.extend(["--no-webui".into(), "--no-warmup".into()]);
    a
}

/// What the estimator says for this server: one device (the host) with every layer.
pub fn estimated(info: &ModelInfo, args: &[String], ctx: u64) -> Result<(Terms, u64)> {
    let (flash_attn, n_ubatch) = attention_flags(args);
    let kv = kv_type_bytes(None).map_err(anyhow::Error::msg)?;
    let input = FitInput {
        ctx,
        parallel: 1,
        per_slot_ctx: false,
        gpu_layers: GpuLayers::All,
        tensor_split: None,
        kv_bytes_k: kv,
        kv_bytes_v: kv,
        flash_attn,
        n_ubatch,
    };
    let est = estimate(info, &input, &[(0, u64::MAX / 4)]);
    let d = &est.devices[0];
    let terms = Terms {
        weights: d.weights + info.input_bytes,
        kv: d.kv_cache,
        compute: d.compute,
    };
    Ok((terms, d.need + info.input_bytes))
}

/// Serve `model` at `ctx` until `/health` answers 200, stop it; its log.
fn serve(server: &Path, args: &[String], port: u16, log: &Path) -> Result<(String, f64)> {
    let out = std::fs::File::create(log)?;
    let mut child = Command::new(server)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", server.display()))?;
    let started = Instant::now();
    let result = wait_ready(&mut child, port, started);
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    stop(&mut child);
    let text = std::fs::read_to_string(log).unwrap_or_default();
    match result {
        Ok(()) => Ok((text, ready_ms)),
        Err(e) => {
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("{e:#}; its log ({}):\n{}", log.display(), tail.join("\n"))
        }
    }
}

/// SIGTERM (it prints its memory breakdown again as it exits), SIGKILL after 10 s.
fn stop(child: &mut Child) {
    // SAFETY: kill(2) on the pid of a child not yet waited for.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_ready(child: &mut Child, port: u16, started: Instant) -> Result<()> {
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("llama-server exited ({status}) before it was ready");
        }
        if health(port) == Some(200) {
            return Ok(());
        }
        if started.elapsed() > READY_WITHIN {
            bail!("llama-server not ready within {READY_WITHIN:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `… Flash Attention was auto, set to enabled` or `flash_attn = enabled`: what it used.
fn flash_attn_logged(log: &str) -> Option<String> {
    log.lines().find_map(|l| {
        let (_, rest) = l.split_once("flash_attn")?;
        let v = rest.trim_start().strip_prefix('=')?.trim();
        (!v.is_empty()).then(|| v.to_string())
    })
}

/// `load_tensors: CPU_REPACK model buffer size = 662.91 MiB`: the bytes of the repacked copy.
fn repacked(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            l.split_once("CPU_REPACK model buffer size = ")?
                .1
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map(|mib| (mib * 1024.0 * 1024.0).round() as u64)
        .sum()
}

/// Measure every model at each of its contexts, flash attention off and on.
pub fn measure(server: &Path, dir: &Path, models: &[FitModel], port: u16) -> Result<Vec<Case>> {
    std::fs::create_dir_all(dir)?;
    let mut cases = Vec::new();
    for m in models {
        let (path, file_bytes) = m.write(dir)?;
        let info = ModelInfo::open(&path).with_context(|| format!("reading {}", path.display()))?;
        for &ctx in m.ctx {
            for flash_attn in [false, true] {
                let args = server_args(&path, ctx, port, flash_attn);
                let log: PathBuf =
                    dir.join(format!("{}-{ctx}-fa{}.log", m.name, u8::from(flash_attn)));
                let (text, ready_ms) = serve(server, &args, port, &log)
                    .with_context(|| format!("serving {} at ctx {ctx}", m.name))?;
                let report = parse_load_report(&text);
                let actual = report.devices.get("Host").cloned().with_context(|| {
                    format!("{}: no host buffers in the load report", log.display())
                })?;
                let (est, est_need) = estimated(&info, &args, ctx)?;
                let case = Case {
                    model: m.name.to_string(),
                    kind: m.kind,
                    weight_type: m.weight_type(),
                    file_bytes,
                    ctx,
                    flash_attn,
                    fa_logged: flash_attn_logged(&text),
                    est,
                    est_need,
                    actual,
                    repacked: repacked(&text),
                    ready_ms,
                };
                eprintln!("   [9] {}", line(&case));
                cases.push(case);
            }
        }
    }
    Ok(cases)
}

/// The `llama-server` the other figures run: the e2e pool's binary, as the plan of `config`
/// names it; built by an apply (then stopped) when it is not there yet.
pub fn server_binary(p: &Provision, config: &Path, runtime: &str) -> Result<PathBuf> {
    let find = |plan: &serde_json::Value| -> Result<PathBuf> {
        let spawn = steps(plan, "spawn")
            .next()
            .context("the e2e plan has a spawn step")?;
        let binary = spawn["binary"].as_str().context("a spawn step's binary")?;
        Ok(PathBuf::from(expand(plan, binary)))
    };
    let server = find(&p.plan(config, runtime)?)?;
    if !server.exists() {
        eprintln!("   [9] building llama-server: apply of the e2e config, then down");
        p.ok("apply", config, runtime, &["-q"])?;
        p.down(config, runtime)?;
    }
    let server = if server.is_absolute() {
        server
    } else {
        p.work.join(server)
    };
    ensure!(server.exists(), "no llama-server at {}", server.display());
    Ok(server)
}

/// The target: never under the actual, over by at most 5 %.
pub const TARGET: (f64, f64) = (1.0, 1.05);

/// The figure's rows: the ratio over every case (the target), with the margin, per term, per
/// model.
pub fn rows(cases: &[Case]) -> Vec<Row> {
    let over = |f: &dyn Fn(&Case) -> f64, of: &[&Case]| Samples(of.iter().map(|c| f(c)).collect());
    let all: Vec<&Case> = cases.iter().collect();
    let ratio = over(&Case::ratio, &all);
    let models: BTreeSet<&str> = cases.iter().map(|c| c.model.as_str()).collect();
    let met = |s: &Samples| s.min() >= TARGET.0 && s.max() <= TARGET.1;
    let mut rows = vec![Row::new(
        "9",
        format!(
            "estimate ÷ actual, CPU llama-server host buffers: {} models × ctx × flash attention off/on (weights + KV + compute, no margin; actual: model + KV + output + compute)",
            models.len()
        ),
    )
    .value(ratio.show("×", 3))
    .baseline(format!(
        "with the safety margin (512 MiB + 5 %): {}",
        over(&Case::ratio_with_margin, &all).show("×", 2)
    ))
    .target("never < 1.00, ≤ 1.05", met(&ratio))];
    let plain: Vec<&Case> = cases.iter().filter(|c| c.repacked == 0).collect();
    if plain.len() < all.len() {
        let r = over(&Case::ratio, &plain);
        rows.push(
            Row::new(
                "9",
                "the same, cases without a CPU_REPACK copy of the weights (what a GPU would hold too)",
            )
            .value(r.show("×", 3))
            .baseline(format!(
                "{} cases with a repacked copy: {}",
                all.len() - plain.len(),
                over(&Case::ratio, &all.iter().filter(|c| c.repacked > 0).copied().collect::<Vec<_>>())
                    .show("×", 3)
            ))
            .target("never < 1.00, ≤ 1.05", met(&r)),
        );
    }
    let term = |f: &dyn Fn(&Case) -> (u64, u64)| {
        let s = over(
            &|c| {
                let (e, a) = f(c);
                e as f64 / a as f64
            },
            &all,
        );
        s.show("×", 3)
    };
    rows.push(
        Row::new("9", "per term, estimate ÷ actual: weights (+ token embeddings) ÷ model buffer; KV ÷ KV; compute ÷ compute + output")
            .value(format!(
                "weights {}; KV {}; compute {}",
                term(&|c| (c.est.weights, c.actual.model)),
                term(&|c| (c.est.kv, c.actual.kv)),
                term(&|c| (c.est.compute, c.actual.compute + c.actual.output)),
            )),
    );
    for m in &models {
        let of: Vec<&Case> = cases.iter().filter(|c| c.model == *m).collect();
        let c = of[0];
        let ctx: BTreeSet<u64> = of.iter().map(|c| c.ctx).collect();
        let ctx: Vec<String> = ctx.iter().map(u64::to_string).collect();
        let r = over(&Case::ratio, &of);
        let worst = of
            .iter()
            .max_by(|a, b| (a.ratio() - 1.0).abs().total_cmp(&(b.ratio() - 1.0).abs()))
            .expect("a case");
        rows.push(
            Row::new(
                "9",
                format!(
                    "{} ({}, {}, {:.0} MB), ctx {}",
                    c.model,
                    c.kind,
                    c.weight_type,
                    c.file_bytes as f64 / 1e6,
                    ctx.join("/")
                ),
            )
            .value(r.show("×", 3))
            .baseline(format!("furthest: {}", terms(worst)))
            .target("1.00–1.05", met(&r)),
        );
    }
    rows
}

/// A case's terms, estimate/actual in MiB.
fn terms(c: &Case) -> String {
    format!(
        "ctx {} fa {}: weights {:.0}/{:.0} (of it repacked {:.0}), KV {:.0}/{:.0}, compute {:.1}/{:.1} + output {:.2} MiB",
        c.ctx,
        if c.flash_attn { "on" } else { "off" },
        mib(c.est.weights),
        mib(c.actual.model),
        mib(c.repacked),
        mib(c.est.kv),
        mib(c.actual.kv),
        mib(c.est.compute),
        mib(c.actual.compute),
        mib(c.actual.output),
    )
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// One case, every term: `estimate / actual` MiB.
pub fn line(c: &Case) -> String {
    format!(
        "{} ({} {}, {:.0} MB) ctx {} fa {}{}: {:.3}× | weights {:.1}/{:.1} (repacked {:.1}) kv {:.1}/{:.1} compute {:.1}/{:.1} output -/{:.2} MiB | ready {:.0} ms",
        c.model,
        c.kind,
        c.weight_type,
        c.file_bytes as f64 / 1e6,
        c.ctx,
        if c.flash_attn { "on" } else { "off" },
        c.fa_logged.as_deref().map(|f| format!(" ({f})")).unwrap_or_default(),
        c.ratio(),
        mib(c.est.weights),
        mib(c.actual.model),
        mib(c.repacked),
        mib(c.est.kv),
        mib(c.actual.kv),
        mib(c.est.compute),
        mib(c.actual.compute),
        mib(c.actual.output),
        c.ready_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flash_attention_and_the_repacked_bytes_the_log_reports() {
        let log = "llama_context: n_ubatch      = 512\nllama_context: flash_attn    = enabled\n";
        assert_eq!(flash_attn_logged(log).as_deref(), Some("enabled"));
        assert_eq!(flash_attn_logged("llama_context: n_ctx = 512\n"), None);
        let log = "load_tensors:   CPU_Mapped model buffer size =   636.16 MiB\nload_tensors:   CPU_REPACK model buffer size =   2.50 MiB\n";
        assert_eq!(repacked(log), 5 * 512 * 1024);
        assert_eq!(
            repacked("load_tensors:   CPU_Mapped model buffer size = 1.00 MiB\n"),
            0
        );
    }

    #[test]
    fn the_estimate_reads_the_servers_flash_attention_and_ubatch() {
        let on = server_args(Path::new("m.gguf"), 4096, 9, true);
        let off = server_args(Path::new("m.gguf"), 4096, 9, false);
        assert_eq!(attention_flags(&on), (true, 512));
        assert_eq!(attention_flags(&off), (false, 512));
        assert!(on.windows(2).any(|w| w == ["--ctx-size", "4096"]));
    }
}
