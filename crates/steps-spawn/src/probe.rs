//! The probe step: poll the server's health path until its engine calls the answer ready
//! (connection refused, or llama.cpp's 503 "Loading model", mean not yet), every 1 ms at first
//! and then every twentieth of the time waited so far (at most 15 ms), so readiness is seen
//! within 5% of the load time; fail at once when the server exits while loading. Once it is
//! ready, the listener on the port must be the server's own (else another process answered:
//! the probe fails at once and the server is stopped), and the port's reservation is released.
//! Then the metrics endpoint (when the flags ask for it) and the engine version. What the
//! endpoints are and what their answers mean is the engine's ([`crate::engine`]); the server
//! is a [`ServerHandle`].

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use provision_executor::{ExitState, FailedCommand, Outcome, StepContext, StepError};
use provision_plan::config::Backend;
use provision_plan::outputs::{
    CmakeBuildOutputs, DeviceMemory, ProbeOutputs, SpawnOutputs, VramFitOutputs,
};
use provision_plan::step::Probe;
use provision_plan::StepId;

use crate::engine::RuntimeEngine;
use crate::http::{Http, NoReply};
use crate::listener_owner;
use crate::port;
use crate::process::NotRunning;
use crate::replica::{
    api_key, expand, note, remove_handoff, replica_name, server_log_tail, DEFAULT_GRACE,
};
use crate::server_handle::{Access, ServerHandle};

/// The shortest pause between two polls.
const POLL_MIN: Duration = Duration::from_millis(1);
/// The longest pause between two polls: readiness is seen within it (plus one request).
pub const POLL_MAX: Duration = Duration::from_millis(15);
/// The pause between two polls is the time waited so far divided by this (within
/// [`POLL_MIN`]..[`POLL_MAX`]): readiness is seen within 5% of the load time, 1–2 ms for a
/// small model, at a cost of ~20·ln(t / 20 ms) polls up to 300 ms and 67 a second after
/// that (a refused connect and a /proc read each: microseconds).
const POLL_FRACTION: u32 = 20;

/// How long to wait before the next poll, `waited` after the first.
fn poll_pause(waited: Duration) -> Duration {
    (waited / POLL_FRACTION).clamp(POLL_MIN, POLL_MAX)
}
/// How long one health request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The outputs of the replica's spawn step: `None` for an external server (none is spawned);
/// `Err` when a server of provision's own recorded none.
fn spawned<'c>(
    spec: &Probe,
    cx: &'c StepContext<'_>,
) -> Result<Option<&'c SpawnOutputs>, StepError> {
    let id = StepId::spawn(&spec.pool, spec.replica);
    if spec.external {
        cx.maybe_dep(&id)
    } else {
        cx.dep(&id).map(Some)
    }
}

/// The URL to ask, placeholders expanded and its credentials (`${secret:url.userinfo}`, an
/// external server's) filled in from the step's secrets: for the request only, never shown. A
/// plan that lacks them (read back from JSON alone) fails here, naming the secret.
fn real_url(spec: &Probe, cx: &StepContext<'_>, port: Option<u16>) -> Result<String, StepError> {
    cx.expand_secrets(&expand(cx, &spec.url, port))
}

/// Is the replica recorded last time still healthy? (Its health path ready, and its metrics
/// endpoint 200 when required.) The reason it is not names no credential.
pub fn check_probe(spec: &Probe, cx: &StepContext<'_>) -> Result<(), String> {
    check_recorded(spec, cx).map_err(|why| cx.redactor.redact(&why))
}

fn check_recorded(spec: &Probe, cx: &StepContext<'_>) -> Result<(), String> {
    let previous = cx.previous::<ProbeOutputs>().ok_or("never probed")?;
    let engine = crate::engine::of(spec.engine)?;
    // The server is the one its spawn step records (a new one dirties this step: the spawn's
    // outputs are in its fingerprint). The recorded URL is redacted: an external server's
    // credentials come from the plan.
    let server = if spec.external {
        ServerHandle::external(real_url(spec, cx, None).map_err(|e| e.message)?)
    } else {
        spawned(spec, cx)
            .map_err(|e| e.message)?
            .and_then(ServerHandle::recorded)
            .ok_or("no server recorded")?
    }
    .with_access(access(spec, cx));
    let url = if spec.external {
        server.url()
    } else {
        &previous.url
    };
    server.check().map_err(|e| e.to_string())?;
    let http = server.client(REQUEST_TIMEOUT)?;
    let health = format!("{url}{}", spec.health_path);
    match http.get(&health, None) {
        Ok(r) if engine.is_ready(&r) => {}
        Ok(r) => {
            return Err(format!(
                "{health} answered {}: {}",
                r.status,
                engine.reason(&r.body)
            ))
        }
        Err(e) => return Err(format!("{health}: {e}")),
    }
    // Kept only while the answer is its own server's.
    server.verify_listener(url).map_err(|e| e.to_string())?;
    if spec.metrics {
        let metrics = format!("{url}{}", engine.metrics_path());
        match http.get(&metrics, server.api_key()) {
            Ok(r) if r.status == 200 => {}
            Ok(r) => return Err(format!("{metrics} answered {}", r.status)),
            Err(e) => return Err(format!("{metrics}: {e}")),
        }
    }
    Ok(())
}

/// Wait for the replica to be ready.
pub fn probe(spec: &Probe, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
    let name = replica_name(&spec.pool, spec.replica);
    let engine = crate::engine::of(spec.engine).map_err(StepError::new)?;
    let spawned = spawned(spec, cx)?;
    let port = spawned.map(|s| s.port);
    // The port stays reserved (host-wide) until its server is seen listening, or this fails.
    let _reservation = port.filter(|_| !spec.external).map(ReleasePort);
    let url = match (spec.external, spawned) {
        (false, Some(s)) => s.url.clone(),
        _ => real_url(spec, cx, port)?,
    };
    if url.contains("${port}") {
        return Err(StepError::new(format!(
            "the port of {name} is unknown: its spawn step recorded none"
        ))
        .hint("rerun apply with --force"));
    }
    // Until it is ready again, nobody may be sent to it.
    let handoff = spawned
        .and_then(|s| s.handoff_path.as_deref())
        .map(PathBuf::from)
        .or_else(|| spec.handoff_path.as_deref().map(|h| cx.path(h)));
    if let Some(h) = &handoff {
        let _ = remove_handoff(h, &crate::replica::Owner::of(cx, &spec.pool, spec.replica));
    }
    let server = match spawned {
        Some(s) if !spec.external => ServerHandle::recorded(s).ok_or_else(|| {
            StepError::new(format!("no server process recorded for {name}"))
                .hint("rerun apply with --force")
        })?,
        _ => ServerHandle::external(url),
    }
    .with_access(access(spec, cx));
    let url = server.url();
    let key = server.api_key();
    let shown_url = cx.redactor.redact(url);
    let health = format!("{url}{}", spec.health_path);
    let http = server
        .client(REQUEST_TIMEOUT)
        .map_err(|e| cert_unreadable(spec, &name, e))?;

    let replica = Replica {
        spec,
        engine,
        name: &name,
        server: &server,
        shown_url: &shown_url,
    };
    let started = Instant::now();
    let polls = wait_ready(cx, &replica, &http, &health, port, started)?;
    if let Err(why) = server.verify_listener(url) {
        let asked = format!("{shown_url}{}", spec.health_path);
        return Err(fail_not_owner(cx, &name, &asked, &server, &why));
    }
    let ready_ms = started.elapsed().as_millis() as u64;
    note(
        cx,
        &format!("{name} ready after {ready_ms} ms ({polls} polls of {shown_url})"),
    );

    let mut memory = check_load_report(cx, &replica, spawned)?;
    with_estimates(cx, &mut memory)?;

    if spec.metrics {
        check_metrics(&replica, &http, url, key)?;
    }

    let (version, source) = engine_version(cx, engine, &http, (url, key), spawned);
    note(
        cx,
        &format!("{name}: engine version {version} (from {source})"),
    );

    Ok(Outcome::new(ProbeOutputs {
        url: shown_url,
        ready_ms,
        engine_version: version,
        engine_version_source: source.to_string(),
        handoff_path: handoff.map(|h| h.display().to_string()),
        memory,
    }))
}

/// The replica being probed: the engine it runs and its server.
struct Replica<'a> {
    spec: &'a Probe,
    engine: &'static dyn RuntimeEngine,
    name: &'a str,
    server: &'a ServerHandle,
    /// The URL as shown (credentials redacted).
    shown_url: &'a str,
}

impl Replica<'_> {
    /// The log its server writes (none when external).
    fn log(&self) -> Option<&Path> {
        self.server.local().map(|l| l.log.as_path())
    }
}

/// Poll `health` until it answers 200; the number of polls. Fails at once when the server
/// exits, or when the TLS certificate is not the pinned one; after the timeout, stops the
/// server (if ours) and fails.
fn wait_ready(
    cx: &StepContext<'_>,
    replica: &Replica,
    http: &Http,
    health: &str,
    port: Option<u16>,
    started: Instant,
) -> Result<u64, StepError> {
    let Replica {
        spec,
        engine,
        name,
        server,
        shown_url,
    } = *replica;
    let log = replica.log();
    let timeout = Duration::from_millis(spec.timeout_ms);
    let mut last: String;
    let mut polls = 0u64;
    loop {
        if cx.cancel.is_cancelled() {
            return Err(StepError::cancelled());
        }
        if let Err(why) = server.check() {
            let exited = Exited {
                name,
                why: &why,
                log,
                binary: server.local().map(|l| l.binary.as_str()),
                program: engine.program(),
            };
            return Err(fail_exited(cx, &exited, started, port));
        }
        polls += 1;
        match http.get(health, None) {
            Ok(r) if engine.is_ready(&r) => break,
            Ok(r) => last = format!("{} {}", r.status, engine.reason(&r.body)),
            Err(NoReply::Refused) => last = "connection refused".into(),
            Err(NoReply::NotPinned) => {
                return Err(fail_not_pinned(cx, name, shown_url, server, log))
            }
            Err(e) => last = e.to_string(),
        }
        if started.elapsed() >= timeout {
            // Not ready in time: a server that is ours does not stay behind half-loaded.
            let stopped = server.local().map(|_| server.stop(DEFAULT_GRACE));
            let mut err = StepError::new(format!(
                "{name} did not become ready within {} ms: {shown_url}{} last answered: {last}",
                spec.timeout_ms, spec.health_path
            ));
            err = match (spec.external, stopped) {
                (true, _) => err.hint("check that the external server is up and reachable"),
                (false, Some(Err(e))) => err.hint(format!("it could not be stopped: {e}")),
                (false, _) => err.hint(
                    "it was stopped; raise the pool's `readiness_timeout_ms` if loading takes longer, or read the log",
                ),
            };
            if let Some(log) = log {
                err = err.tail(server_log_tail(cx, log));
            }
            return Err(err);
        }
        let left = timeout.saturating_sub(started.elapsed());
        thread::sleep(poll_pause(started.elapsed()).min(left));
    }
    Ok(polls)
}

/// How long the load report may trail the server's ready answer in its log (a logger thread
/// writes it).
const REPORT_WAIT: Duration = Duration::from_secs(2);

/// The server's own load report, from its log: what it allocated per device. A GPU pool's
/// server must show there every layer it was asked for on its GPUs (issue 15 finding 5: a
/// build without GPU support, or one that kept layers in host memory, serves from the CPU);
/// else it is stopped and the probe fails, so it is never handed off. Nothing for an external
/// server (its log is not ours).
fn check_load_report(
    cx: &StepContext<'_>,
    replica: &Replica,
    spawned: Option<&SpawnOutputs>,
) -> Result<BTreeMap<String, DeviceMemory>, StepError> {
    let (Some(s), Some(log), false) = (spawned, replica.log(), replica.spec.external) else {
        return Ok(BTreeMap::new());
    };
    let engine = replica.engine;
    let read = || engine.load_report(&read_start(log, engine.load_report_bytes()));
    let gpu = s.backend != Backend::Cpu;
    let mut report = read();
    let waited = Instant::now();
    while gpu && !report.tells_placement() && waited.elapsed() < REPORT_WAIT {
        thread::sleep(Duration::from_millis(10));
        report = read();
    }
    if gpu {
        if let Err(why) = report.on_gpus(s.gpu_layers) {
            let stopped = replica.server.stop(DEFAULT_GRACE);
            let hint = if report.offloaded.is_some() {
                format!(
                    "a {} pool runs entirely on its GPUs: let the pool's flags keep every layer there, give it more or larger devices, or set `backend: cpu` on pool {}",
                    s.backend.as_str(),
                    replica.spec.pool
                )
            } else {
                engine.no_device_hint(&replica.spec.pool, s.backend)
            };
            let hint = match stopped {
                Ok(_) => hint,
                Err(e) => format!("{hint}; stopping the server failed: {e}"),
            };
            return Err(StepError::new(format!(
                "{} is not on its {} devices {:?}: {why}; it was stopped and is not handed off",
                replica.name,
                s.backend.as_str(),
                s.devices
            ))
            .hint(hint)
            .tail(server_log_tail(cx, log)));
        }
    }
    Ok(report.memory(&s.devices))
}

/// Each GPU's estimate from the pool's vram-fit (when it has one) beside what the server
/// allocated there.
fn with_estimates(
    cx: &StepContext<'_>,
    memory: &mut BTreeMap<String, DeviceMemory>,
) -> Result<(), StepError> {
    let Some(fit) = cx.the_dep::<VramFitOutputs>()? else {
        return Ok(());
    };
    for m in memory.values_mut() {
        m.estimated_bytes = m.gpu.and_then(|g| {
            fit.estimate
                .devices
                .iter()
                .find(|d| d.device == g)
                .map(|d| d.need)
        });
    }
    Ok(())
}

/// The first `max` bytes of `log` (empty when it cannot be read).
fn read_start(log: &Path, max: u64) -> String {
    let mut bytes = Vec::new();
    if let Ok(f) = std::fs::File::open(log) {
        let _ = f.take(max).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The engine's metrics endpoint answers 200, or the server (if ours) is stopped and the
/// probe fails.
fn check_metrics(
    replica: &Replica,
    http: &Http,
    url: &str,
    key: Option<&str>,
) -> Result<(), StepError> {
    let Replica {
        engine,
        name,
        server,
        shown_url,
        ..
    } = *replica;
    let path = engine.metrics_path();
    let problem = match http.get(&format!("{url}{path}"), key) {
        Ok(r) if r.status == 200 => None,
        Ok(r) => Some(format!("answered {} {}", r.status, engine.reason(&r.body))),
        Err(e) => Some(e.to_string()),
    };
    if let Some(problem) = problem {
        let _ = server.stop(DEFAULT_GRACE);
        return Err(StepError::new(format!(
            "{name}: {shown_url}{path} {problem}, but the pool's flags ask for {}",
            engine.metrics_flag()
        ))
        .hint(engine.metrics_hint()));
    }
    Ok(())
}

/// How the probe asks its server: trusting exactly the pool's certificate when the replica
/// serves `listen.tls`, with the API key its server requires.
fn access(spec: &Probe, cx: &StepContext<'_>) -> Access {
    Access {
        pin: spec
            .pinned_cert
            .as_ref()
            .map(|c| PathBuf::from(cx.expand(c))),
        api_key: api_key(spec, cx),
    }
}

fn cert_unreadable(spec: &Probe, name: &str, why: String) -> StepError {
    StepError::new(format!("{name}: {why}")).hint(format!(
        "point `listen.tls.cert_file` of pool {} at the PEM certificate the server presents",
        spec.pool
    ))
}

/// Whoever answered on the replica's port presented a certificate other than the pool's: not
/// provably the server provision started. It is stopped (nobody could trust it) and not
/// handed off.
fn fail_not_pinned(
    cx: &StepContext<'_>,
    name: &str,
    url: &str,
    server: &ServerHandle,
    log: Option<&Path>,
) -> StepError {
    let stopped = server.local().map(|_| server.stop(DEFAULT_GRACE));
    let mut err = StepError::new(format!(
        "{url} presented a TLS certificate other than the pool's `listen.tls.cert_file`: it is not provably the server of {name}; it is not handed off"
    ))
    .hint(match stopped {
        Some(Err(e)) => format!("stopping the server failed: {e}"),
        _ => "the server was stopped: check that `cert_file` is the certificate of `key_file` (its first PEM block is the one trusted), and that no other program holds the port; then apply again".to_string(),
    });
    if let Some(log) = log {
        err = err.tail(server_log_tail(cx, log));
    }
    err
}

/// Releases a port's reservation when dropped.
struct ReleasePort(u16);

impl Drop for ReleasePort {
    fn drop(&mut self) {
        port::release(self.0);
    }
}

/// The health path answered ready, but from a listener that is not the server's: it never
/// serves there (it lost the port, or binds too late), so it is stopped and nobody is sent to
/// it.
fn fail_not_owner(
    cx: &StepContext<'_>,
    name: &str,
    asked: &str,
    server: &ServerHandle,
    why: &listener_owner::NotOwned,
) -> StepError {
    let log = server.local().map(|l| l.log.as_path());
    let stopped = server.stop(DEFAULT_GRACE);
    let mut err = StepError::new(format!(
        "{asked} answered 200, but not from the server of {name}: {why}; it is not handed off"
    ))
    .hint(match stopped {
        Ok(_) => "another program took the port before the server bound it (another provision, or a server provision did not start); its server was stopped: rerun apply to choose another port, or stop that program, or change `provisioning.ports`".to_string(),
        Err(e) => format!("another program took the port before the server bound it; stopping the server failed: {e}"),
    });
    if let Some(log) = log {
        err = err.tail(server_log_tail(cx, log));
    }
    err
}

/// A server that exited while the probe waited for it.
struct Exited<'a> {
    name: &'a str,
    /// How it was seen to be gone (`pid 12 exited with exit status 3`).
    why: &'a NotRunning,
    /// Its own log.
    log: Option<&'a Path>,
    /// The binary it ran.
    binary: Option<&'a str>,
    /// The engine's program, named when the binary is not known.
    program: &'a str,
}

impl Exited<'_> {
    /// The server as the failed command: its binary, its exit status when it was our child,
    /// its log.
    fn failed_command(&self, cx: &StepContext<'_>) -> FailedCommand {
        let binary = self.binary.unwrap_or(self.program);
        FailedCommand {
            command: cx.redactor.redact(binary),
            cwd: None,
            status: self.why.exit_status().map(ExitState::from),
            output_log: self.log.map(|l| l.display().to_string()),
        }
    }
}

fn fail_exited(
    cx: &StepContext<'_>,
    exited: &Exited<'_>,
    started: Instant,
    port: Option<u16>,
) -> StepError {
    let Exited { name, why, log, .. } = *exited;
    // A server that could not bind: who holds its port (it cannot be the server: it exited).
    let holder = port.and_then(|p| port::holder(p).map(|h| (p, h)));
    let held = holder
        .as_ref()
        .map(|(p, h)| format!("; port {p} is held by {h}"))
        .unwrap_or_default();
    let mut err = StepError::new(format!(
        "{name} exited while loading, {} ms after the probe started: {why}{held}",
        started.elapsed().as_millis()
    ));
    if holder.is_some() {
        err = err.hint(
            "another program took its port: stop it, or rerun apply to choose another port (or change `provisioning.ports`)",
        );
    }
    if let Some(log) = log {
        let read = format!("the last lines of its log {} are below", log.display());
        err = match err.hint.take() {
            Some(h) => err.hint(format!("{h}; {read}")),
            None => err.hint(read),
        }
        .tail(server_log_tail(cx, log));
    }
    err.command(exited.failed_command(cx))
}

/// The engine version and where it came from: what the server reports (llama.cpp: `/props`
/// `build_info`, then `/v1/models`), then what its binary prints (`--version`), then
/// `<build ref>-<backend>`.
fn engine_version(
    cx: &StepContext<'_>,
    engine: &dyn RuntimeEngine,
    http: &Http,
    (url, key): (&str, Option<&str>),
    spawned: Option<&SpawnOutputs>,
) -> (String, &'static str) {
    if let Some(reported) = engine.reported_version(http, url, key) {
        return reported;
    }
    if let Some(printed) = spawned.and_then(|s| engine.binary_version(Path::new(&s.binary))) {
        return printed;
    }
    // The commit of the build the server runs (none for a binary or an external server).
    let build_ref = cx
        .the_dep::<CmakeBuildOutputs>()
        .ok()
        .flatten()
        .and_then(|b| b.build_ref.as_deref())
        .unwrap_or("unknown");
    let backend = spawned.map_or("cuda", |s| s.backend.as_str());
    (format!("{build_ref}-{backend}"), "ref")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_pause_is_a_twentieth_of_the_wait_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(poll_pause(ms(0)), POLL_MIN);
        assert_eq!(poll_pause(ms(10)), POLL_MIN);
        assert_eq!(poll_pause(ms(60)), ms(3));
        assert_eq!(poll_pause(ms(200)), ms(10));
        assert_eq!(poll_pause(Duration::from_secs(120)), POLL_MAX);
        // Polls in a 1-minute load: enough to see readiness quickly, few enough to be free.
        let (mut t, mut polls) = (Duration::ZERO, 0);
        while t < Duration::from_secs(60) {
            t += poll_pause(t);
            polls += 1;
        }
        assert!((3_900..4_200).contains(&polls), "{polls} polls");
    }
}
