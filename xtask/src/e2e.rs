//! `cargo xtask e2e`: the main job, for real. Real llama.cpp source (from PyPI's
//! llama-cpp-python sdist) → CMake → `llama-server` → a tiny GGUF → two replicas → handoffs →
//! completions → warm re-apply → one flag changed → a server killed and restored → down → bad
//! inputs → a replica serving HTTPS behind an API key, each checked, with a timing table at the
//! end.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::setup;

mod tls;

const CONFIG: &str = "fixtures/e2e/tiny-cpu.yaml";
const POOL: &str = "tiny";
const DEFAULT_FLAGS: &[&str] = &[
    "--parallel",
    "--no-cont-batching",
    "--metrics",
    "--no-webui",
];

struct E2e {
    root: PathBuf,
    work: PathBuf,
    bin: PathBuf,
    timings: Vec<(String, Duration)>,
}

/// `method path` over HTTP/1.1 to 127.0.0.1; returns (status, body).
fn http(url: &str, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
    let authority = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream =
        TcpStream::connect(authority).with_context(|| format!("connecting to {authority}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        status,
        if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        },
    ))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A process that exists and is not a zombie (an exited server waits for init to reap it).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("State:"))
                .map(|l| !l.contains("Z (zombie)") && !l.contains("X (dead)"))
        })
        .unwrap_or(false)
}

/// Pids of running llama-server processes started from `binary_dir`.
fn servers_under(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                    let exe = std::fs::read_link(e.path().join("exe")).ok()?;
                    let exe = exe.display().to_string();
                    (exe.contains(&needle) && exe.ends_with("llama-server") && alive(pid))
                        .then_some(pid)
                })
                .collect()
        })
        .unwrap_or_default()
}

impl E2e {
    fn provision(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.bin)
            .args(args)
            .current_dir(&self.work)
            .output()
            .with_context(|| format!("running provision {args:?}"))
    }

    /// `provision <cmd> --config <config> --runtime-dir <runtime>`.
    fn run(&self, cmd: &str, config: &Path, runtime: &str, extra: &[&str]) -> Result<Output> {
        let config = config.display().to_string();
        let mut args = vec![cmd, "--config", &config, "--runtime-dir", runtime];
        args.extend_from_slice(extra);
        self.provision(&args)
    }

    fn timed<T>(&mut self, what: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let out = f(self)?;
        let d = t.elapsed();
        eprintln!("   {what}: {:.2}s", d.as_secs_f64());
        self.timings.push((what.into(), d));
        Ok(out)
    }

    fn handoff(&self, runtime: &str, r: u32) -> Result<Value> {
        let path = self
            .work
            .join(runtime)
            .join(format!("engines/llamacpp-{POOL}-r{r}.json"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Step ids of the `started` events in a `--json` apply's output.
    fn started(out: &Output) -> BTreeSet<String> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == "started")
            .filter_map(|e| e["step"].as_str().map(str::to_string))
            .collect()
    }

    fn config(&self) -> PathBuf {
        self.root.join(CONFIG)
    }

    /// A variant of the e2e config written beside the work dir, with `edit` applied.
    fn variant(&self, name: &str, edit: impl Fn(&str) -> String) -> Result<PathBuf> {
        let text = std::fs::read_to_string(self.config())?;
        // Same depth below the repository root as fixtures/e2e, so relative refs still resolve.
        let dir = self.root.join("target/e2e-configs");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(name);
        let changed = edit(&text);
        ensure!(changed != text, "variant {name} changed nothing");
        std::fs::write(&path, changed)?;
        Ok(path)
    }
}

fn check_replicas(e: &E2e, runtime: &str) -> Result<Vec<u64>> {
    let mut pids = Vec::new();
    for r in 0..2 {
        let h = e.handoff(runtime, r)?;
        let url = h["url"].as_str().context("handoff has a url")?;
        let (status, body) = http(
            url,
            "POST",
            "/completion",
            Some(r#"{"prompt": "the", "n_predict": 8}"#),
        )?;
        ensure!(
            status == 200,
            "POST {url}/completion answered {status}: {body}"
        );
        let answer: Value = serde_json::from_str(&body)?;
        let predicted = answer["tokens_predicted"].as_u64().unwrap_or(0);
        ensure!(predicted > 0, "no tokens from {url}: {body}");
        let (_, props) = http(url, "GET", "/props", None)?;
        let props: Value = serde_json::from_str(&props)?;
        let build_info = props["build_info"].as_str().unwrap_or_default();
        let version = h["engine_version"].as_str().unwrap_or_default();
        ensure!(
            !version.is_empty()
                && build_info.contains(
                    version
                        .trim_start_matches('b')
                        .split('-')
                        .next()
                        .unwrap_or("?")
                ),
            "engine_version {version:?} does not come from the server ({build_info:?})"
        );
        let flags: Vec<&str> = h["flags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for f in DEFAULT_FLAGS {
            ensure!(flags.contains(f), "handoff flags lack {f}: {flags:?}");
        }
        ensure!(
            flags.windows(2).any(|w| w == ["--n-gpu-layers", "0"]),
            "no --n-gpu-layers 0 in {flags:?}"
        );
        eprintln!("   r{r}: {url} answered {predicted} tokens; engine {version}");
        pids.push(h["pid"].as_u64().context("handoff has a pid")?);
    }
    Ok(pids)
}

pub fn run(root: &Path) -> Result<()> {
    let total = Instant::now();
    eprintln!("== set-up");
    setup::ensure_build_tools()?;
    let python = setup::ensure_venv(root)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    setup::run(
        Command::new(&cargo)
            .args(["build", "-q", "-p", "provision-cli"])
            .current_dir(root),
    )?;

    let work = root.join("target/e2e");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let mut e = E2e {
        root: root.to_path_buf(),
        work,
        bin: std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("debug/provision"),
        timings: Vec::new(),
    };

    let fixtures = root.join(".fixtures");
    std::fs::create_dir_all(&fixtures)?;
    e.timed("source prep", |_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let persistent =
            std::env::var("XDG_CACHE_HOME").unwrap_or_else(|_| format!("{home}/.cache"));
        let repo = PathBuf::from(persistent).join("provision-fixtures/llama.cpp");
        setup::run(Command::new(root.join("fixtures/llamacpp/prepare-source.sh")).arg(&repo))?;
        let link = fixtures.join("llama.cpp");
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir_all(&link);
        std::os::unix::fs::symlink(&repo, &link)?;
        Ok(())
    })?;
    e.timed("model", |_| {
        setup::run(
            Command::new(&python)
                .arg(root.join("fixtures/models/make_tiny_gguf.py"))
                .arg(fixtures.join("tiny-llama.gguf")),
        )
    })?;

    let result = scenario(&mut e);
    // Whatever happened, leave nothing running.
    let _ = e.run("down", &e.config(), ".runtime", &[]);
    result?;

    eprintln!("\n== timings");
    for (what, d) in &e.timings {
        eprintln!("   {what:<34} {:>8.2}s", d.as_secs_f64());
    }
    eprintln!("   {:<34} {:>8.2}s", "total", total.elapsed().as_secs_f64());
    eprintln!("e2e: 10 passed, 0 failed");
    Ok(())
}

fn scenario(e: &mut E2e) -> Result<()> {
    let config = e.config();
    let rt = ".runtime";

    eprintln!("== 1. plan");
    let out = e.run("plan", &config, rt, &["--format", "json"])?;
    ensure!(out.status.success(), "plan failed: {}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout)?;
    let kinds: BTreeSet<&str> = plan["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["kind"].as_str())
        .collect();
    eprintln!(
        "   {} steps: {}",
        plan["steps"].as_array().map_or(0, Vec::len),
        kinds.iter().copied().collect::<Vec<_>>().join(", ")
    );

    eprintln!("== 2. apply (clone, configure, build llama-server, model, 2 replicas)");
    let out = e.timed("apply (cold or cached build)", |e| {
        e.run("apply", &config, rt, &["--format", "json"])
    })?;
    ensure!(out.status.success(), "apply failed: {}", text(&out));
    let state: Value = serde_json::from_str(&std::fs::read_to_string(
        e.work.join(rt).join("state.json"),
    )?)?;
    for kind in ["cmake-configure", "cmake-build"] {
        if let Some((id, r)) = state["steps"]
            .as_object()
            .into_iter()
            .flatten()
            .find(|(id, _)| id.starts_with(kind))
        {
            let ms = r["duration_ms"].as_u64().unwrap_or(0);
            let ran = E2e::started(&out).contains(id);
            eprintln!(
                "   {kind}: {} ({:.1}s)",
                if ran { "ran" } else { "fresh" },
                ms as f64 / 1000.0
            );
            e.timings.push((
                format!("{kind}{}", if ran { "" } else { " (fresh)" }),
                Duration::from_millis(ms),
            ));
        }
    }
    for r in 0..2 {
        if let Some(ms) = state["steps"][format!("probe:{POOL}/r{r}")]["duration_ms"].as_u64() {
            e.timings.push((
                format!("spawn → ready r{r} (probe)"),
                Duration::from_millis(ms),
            ));
        }
    }

    eprintln!("== 3. completions from every handoff");
    let pids = check_replicas(e, rt)?;

    eprintln!("== 4. apply again: nothing rebuilt, nothing restarted");
    let out = e.timed("warm re-apply", |e| {
        e.run("apply", &config, rt, &["--format", "json"])
    })?;
    ensure!(out.status.success(), "warm apply failed: {}", text(&out));
    let started = E2e::started(&out);
    ensure!(started.is_empty(), "warm apply ran {started:?}");
    ensure!(check_replicas(e, rt)? == pids, "a replica was restarted");

    eprintln!("== 5. one replica-level flag changed: only spawn/probe/handoff rerun");
    let changed = e.variant("tiny-cpu-threads.yaml", |t| {
        t.replace("[--threads, \"1\",", "[--threads, \"2\",")
    })?;
    let out = e.run("apply", &changed, rt, &["--format", "json"])?;
    ensure!(
        out.status.success(),
        "apply with a changed flag failed: {}",
        text(&out)
    );
    let started = E2e::started(&out);
    ensure!(
        !started.is_empty()
            && started.iter().all(|s| ["spawn:", "probe:", "handoff:"]
                .iter()
                .any(|p| s.starts_with(p))),
        "a changed flag ran {started:?}"
    );
    eprintln!(
        "   reran: {}",
        started.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    let out = e.run("apply", &config, rt, &["--format", "json"])?;
    ensure!(
        out.status.success(),
        "apply back to the original flags failed: {}",
        text(&out)
    );
    let pids = check_replicas(e, rt)?;

    eprintln!("== 6. kill -9 one server: status says down, apply restores it");
    let victim = pids[0];
    Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()?;
    std::thread::sleep(Duration::from_millis(200));
    let out = e.run("status", &config, rt, &["--format", "json"])?;
    let status: Value = serde_json::from_slice(&out.stdout).with_context(|| text(&out))?;
    let r0 = &status["pools"][0]["replicas"][0];
    ensure!(r0["state"] != "up", "status still says r0 is up: {r0}");
    eprintln!("   status: r0 {}", r0["state"]);
    let out = e.timed("restore one replica", |e| {
        e.run("apply", &config, rt, &["--format", "json"])
    })?;
    ensure!(
        out.status.success(),
        "restoring apply failed: {}",
        text(&out)
    );
    let started = E2e::started(&out);
    ensure!(
        started.iter().all(|s| s.ends_with("/r0")),
        "restoring r0 also ran {started:?}"
    );
    let restored = check_replicas(e, rt)?;
    ensure!(
        restored[1] == pids[1] && restored[0] != victim,
        "only r0 should have restarted"
    );

    eprintln!("== 7. down: no server, no handoff left");
    let build_dir =
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/provision/build");
    let out = e.timed("down", |e| e.run("down", &config, rt, &[]))?;
    ensure!(out.status.success(), "down failed: {}", text(&out));
    let left: Vec<u32> = restored
        .iter()
        .map(|p| *p as u32)
        .filter(|p| alive(*p))
        .collect();
    ensure!(left.is_empty(), "servers left after down: {left:?}");
    let handoffs = std::fs::read_dir(e.work.join(rt).join("engines"))
        .map(|d| d.count())
        .unwrap_or(0);
    ensure!(handoffs == 0, "{handoffs} handoff files left after down");
    let _ = build_dir;

    eprintln!("== 8. bad inputs fail clearly and leave nothing behind");
    bad_input(
        e,
        "wrong checksum",
        e.variant("bad-checksum.yaml", |t| {
            t.replace("sha256:2731161f", "sha256:0731161f")
        })?,
        &["expected", "sha256:0731161f"],
    )?;
    bad_input(
        e,
        "unknown ref",
        e.variant("bad-ref.yaml", |t| {
            t.replace("ref: llama.cpp-0c1e57098", "ref: llama.cpp-0c1e57099")
        })?,
        &["llama.cpp-0c1e57099", "llama.cpp-0c1e57098"],
    )?;
    bad_input(
        e,
        "a value llama-server rejects while loading",
        e.variant("bad-flag.yaml", |t| {
            t.replace(
                "[--threads, \"1\",",
                "[--cache-type-k, bogus, --threads, \"1\",",
            )
        })?,
        &["bogus"],
    )?;

    eprintln!("== 9. HTTPS and an API key: a pinned client gets a completion, nothing else does");
    e.timed("TLS pool up, checked, down", |e| tls::stage(e))?;
    Ok(())
}

/// Apply `config` in its own runtime dir: it must fail (exit 3) with every `needles` in its
/// output, and leave no server and no handoff behind.
fn bad_input(e: &E2e, what: &str, config: PathBuf, needles: &[&str]) -> Result<()> {
    let rt = format!(
        ".runtime-{}",
        config.file_stem().unwrap_or_default().to_string_lossy()
    );
    let before: BTreeSet<u32> = servers_under(Path::new("/")).into_iter().collect();
    let out = e.run("apply", &config, &rt, &[])?;
    let shown = text(&out);
    if out.status.code() != Some(3) {
        bail!(
            "{what}: expected exit 3, got {:?}:\n{shown}",
            out.status.code()
        );
    }
    for n in needles {
        ensure!(
            shown.contains(n),
            "{what}: the error does not mention {n:?}:\n{shown}"
        );
    }
    let handoffs = std::fs::read_dir(e.work.join(&rt).join("engines"))
        .map(|d| d.count())
        .unwrap_or(0);
    ensure!(handoffs == 0, "{what}: {handoffs} handoff files left");
    let after: BTreeSet<u32> = servers_under(Path::new("/")).into_iter().collect();
    let new: Vec<&u32> = after.difference(&before).collect();
    ensure!(new.is_empty(), "{what}: servers left running: {new:?}");
    let first = shown
        .lines()
        .find(|l| l.contains("FAILED"))
        .unwrap_or("")
        .trim();
    eprintln!("   {what}: exit 3, {first}");
    let _ = e.run("down", &config, &rt, &[]);
    Ok(())
}
