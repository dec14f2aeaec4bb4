//! The spawn step: start one llama-server replica with the exact planned argv, in its own
//! session and process group, output to its log, pid in its pid file. Before it starts, the
//! replica's previous server (flags changed) is stopped, its handoff removed, its flags checked
//! against what the binary accepts, and its port checked or chosen.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use provision_executor::state::{now_rfc3339, write_atomic, Durability};
use provision_executor::{Facts, Outcome, StepContext, StepError};
use provision_plan::config::Backend;
use provision_plan::outputs::SpawnOutputs;
use provision_plan::secret_ref::SecretRef;
use provision_plan::step::{PortSpec, Spawn};
use sha2::{Digest, Sha256};

use crate::binary_digest::{binary_digest, digest_cache};
use crate::engine::{BackendDevices, KnownFlags, RuntimeEngine};
use crate::handoff_owner::{inspect, Found};
use crate::identity;
use crate::key_files::check_private;
use crate::port;
use crate::process::{self, rotated, ServerProcess};
use crate::replica::{self, expand, note, remove_handoff, replica_name, DEFAULT_GRACE};
use crate::server_handle::ServerHandle;

/// Facts that decide whether a running replica is still current: the digest of the binary it
/// runs (a binary replaced in place restarts the replica).
pub fn spawn_facts(spec: &Spawn, cx: &StepContext<'_>) -> Result<Facts, StepError> {
    let binary = PathBuf::from(expand(cx, &spec.binary, None));
    let mut facts = Facts::new();
    facts.insert(
        "binary_digest".into(),
        binary_digest(&binary, &digest_cache(cx), &cx.cancel).unwrap_or_else(|_| "missing".into()),
    );
    // A key given by reference may change behind it: its digest (never the key) restarts
    // the server with the new one.
    if let Some(key) = &spec.api_key {
        let digest = match key.resolve(|p| cx.expand(p)) {
            Ok(k) => {
                let d = Sha256::digest(format!("provision-api-key-v1\0{}\0{k}", cx.step.id));
                d.iter().map(|b| format!("{b:02x}")).collect()
            }
            Err(_) => "unreadable".to_string(),
        };
        facts.insert("api_key".into(), digest);
    }
    // A certificate renewed in place (same paths) restarts the server, which reads it only
    // when it starts; the key's digest, never the key.
    if let Some(tls) = &spec.tls {
        let read = |p: &str| std::fs::read(cx.expand(p)).ok();
        let digest = match (read(&tls.cert_file), read(&tls.key_file)) {
            (Some(cert), Some(key)) => {
                let mut h = Sha256::new();
                h.update(format!("provision-tls-v1\0{}\0", cx.step.id));
                h.update(Sha256::digest(&cert));
                h.update(Sha256::digest(&key));
                h.finalize().iter().map(|b| format!("{b:02x}")).collect()
            }
            _ => "unreadable".to_string(),
        };
        facts.insert("tls_files".into(), digest);
    }
    Ok(facts)
}

/// Is the server recorded last time (`cx.previous`) still this very process, on a port no
/// other replica is configured for now? (An automatic port that another replica's config now
/// fixes: this server moves, alone, so that one can start.)
pub fn check_spawn(spec: &Spawn, cx: &StepContext<'_>) -> Result<(), String> {
    let previous = cx.previous::<SpawnOutputs>().ok_or("no server recorded")?;
    let server = ServerHandle::recorded(previous).ok_or("no server recorded")?;
    server.check().map_err(|e| e.to_string())?;
    let port = previous.port;
    match spec.port {
        PortSpec::Auto { .. } if spec.reserved_ports.contains(&port) => Err(format!(
            "its automatic port {port} is now configured for another replica"
        )),
        _ => Ok(()),
    }
}

/// Start the replica.
pub fn spawn(spec: &Spawn, cx: &StepContext<'_>) -> Result<Outcome, StepError> {
    let name = replica_name(&spec.pool, spec.replica);
    let engine = crate::engine::of(spec.engine).map_err(StepError::new)?;
    let server_log = cx.path(&spec.log);
    let pid_file = cx.path(&spec.pid_file);
    // Before anything changes: a key file others may read is not used, a certificate that
    // cannot be read could never be probed.
    check_key_files(spec, cx)?;

    // The replica is about to change: nobody may be sent to it meanwhile.
    let handoff = withdraw_handoff(spec, cx, &name)?;
    stop_previous(cx, &name, &server_log, &pid_file)?;

    let binary = PathBuf::from(expand(cx, &spec.binary, None));
    if !binary.is_file() {
        return Err(StepError::new(format!(
            "the {} binary {} does not exist",
            engine.program(),
            binary.display()
        ))
        .hint(
            "mode source: the cmake-build step should have produced it (rerun apply); \
             mode binary: check provisioning.binary.path",
        ));
    }
    let digest = binary_digest(&binary, &digest_cache(cx), &cx.cancel)
        .map_err(|e| StepError::new(format!("cannot read the binary {}: {e}", binary.display())))?;

    let real_env = &server_env(spec, cx, engine)?;
    // The argv holds no secret (they go in the environment): it is shown as is.
    let shown: Vec<String> = spec.argv.iter().map(|a| expand(cx, a, None)).collect();
    if let Some(model) = flag_value(&shown, engine.model_flag()) {
        if !model.contains("${") && !Path::new(&model).is_file() {
            return Err(StepError::new(format!(
                "the model file {model} for {name} does not exist"
            ))
            .hint("the model-resolve step should have made it present: rerun apply"));
        }
    }

    let cache = PathBuf::from(&cx.roots.cache);
    let known = engine
        .accepted_flags(&binary, &digest, real_env, &cache)
        .map_err(|e| {
            StepError::new(e.message)
                .tail(e.tail)
                .hint("check that the binary runs on this machine (shared libraries, CPU features)")
                .with_command(e.command)
        })?;
    let argv = drop_unknown(cx, spec, engine, &known, &binary);
    let shown: Vec<String> = argv.iter().map(|a| expand(cx, a, None)).collect();
    check_flags(spec, engine, &known, &shown, (&binary, &digest))?;
    let binary_of = BinaryOf {
        binary: &binary,
        digest: &digest,
        known: &known,
        env: real_env,
    };
    check_devices(cx, spec, engine, &binary_of, &cache)?;

    let port = choose_port(spec, cx, &name)?;
    let shown: Vec<String> = argv.iter().map(|a| expand(cx, a, Some(port))).collect();
    let dropped = not_inherited(engine, real_env);
    let env = ServerEnv {
        set: real_env,
        dropped: &dropped,
    };
    let started = launch(cx, &shown, &shown, &env, spec, &server_log, port).inspect_err(|_| {
        port::release(port);
    })?;
    note(
        cx,
        &format!(
            "started {name}: pid {} on port {port}, log {}",
            started.pid,
            server_log.display()
        ),
    );
    // No fsync: the pid file describes a running process, which a power loss does not leave.
    if let Err(e) = write_atomic(
        &pid_file,
        started.pid.to_string().as_bytes(),
        Durability::NoSync,
    ) {
        let _ = process::stop(&started, DEFAULT_GRACE);
        port::release(port);
        return Err(StepError::new(format!(
            "cannot write the pid file {}: {e}",
            pid_file.display()
        ))
        .hint("check that the runtime directory is writable"));
    }

    let host = provision_plan::listen::connect_host(&spec.host);
    let scheme = if spec.tls.is_some() { "https" } else { "http" };
    let outputs = SpawnOutputs {
        server: started.identity(),
        port,
        host: spec.host.clone(),
        url: format!("{scheme}://{host}:{port}"),
        log: server_log.display().to_string(),
        pid_file: pid_file.display().to_string(),
        binary: binary.display().to_string(),
        binary_digest: digest,
        backend: spec.backend,
        devices: spec.devices.clone(),
        started_at: now_rfc3339(),
        handoff_path: handoff.map(|h| h.display().to_string()),
        gpu_layers: (spec.backend != Backend::Cpu)
            .then(|| engine.gpu_layers(&shown))
            .flatten(),
    };
    Ok(Outcome::new(outputs))
}

/// Remove the replica's handoff file before its server changes (nobody may be sent to it
/// meanwhile); returns its path. A file there that the handoff step could never replace (not
/// provision's, or another state's) fails the step before a server starts for nothing.
fn withdraw_handoff(
    spec: &Spawn,
    cx: &StepContext<'_>,
    name: &str,
) -> Result<Option<PathBuf>, StepError> {
    let handoff = spec.handoff_path.as_deref().map(|h| cx.path(h));
    if let Some(h) = &handoff {
        let owner = replica::Owner::of(cx, &spec.pool, spec.replica);
        // A file the handoff step could never replace: fail before a server starts for nothing.
        if let Found::NotOurs(why) = inspect(h, &owner) {
            return Err(StepError::new(format!(
                "{name}: {} is not a provision handoff of this replica: {why}; provision does not replace it, so no server is started",
                h.display()
            ))
            .hint(format!(
                "set `handoff_path` of pool {} to a file of provision's own, or move {} away if it is not needed",
                spec.pool,
                h.display()
            )));
        }
        if remove_handoff(h, &owner).map_err(|e| {
            StepError::new(format!(
                "cannot remove the handoff file {}: {e}",
                h.display()
            ))
        })? {
            note(cx, &format!("removed the handoff file {}", h.display()));
        }
    }
    Ok(handoff)
}

/// The planned argv less the flags provision added (`unless_unknown`, each with its value)
/// that this binary does not accept: an older build that needs none of them.
fn drop_unknown(
    cx: &StepContext<'_>,
    spec: &Spawn,
    engine: &dyn RuntimeEngine,
    known: &KnownFlags,
    binary: &Path,
) -> Vec<String> {
    let mut argv = spec.argv.clone();
    for flag in spec.unless_unknown.iter().filter(|f| !known.0.contains(*f)) {
        let Some(at) = argv.iter().position(|a| a == flag) else {
            continue;
        };
        let end = match argv.get(at + 1) {
            Some(v) if !v.starts_with('-') => at + 2,
            _ => at + 1,
        };
        let dropped = argv.drain(at..end).collect::<Vec<_>>().join(" ");
        note(
            cx,
            &format!(
                "left out `{dropped}`: `{} {}` does not list {flag}",
                binary.display(),
                engine.flags_source()
            ),
        );
    }
    argv
}

/// The binary accepts every flag of the argv, and serves TLS when the pool asks for it.
fn check_flags(
    spec: &Spawn,
    engine: &dyn RuntimeEngine,
    known: &KnownFlags,
    shown: &[String],
    (binary, digest): (&Path, &str),
) -> Result<(), StepError> {
    if spec.tls.is_some() && !known.0.contains(engine.tls_flag()) {
        return Err(StepError::new(format!(
            "{} ({digest}) was built without TLS support: its {} lists no {}, so it cannot serve the pool's `listen.tls`; nothing was started",
            binary.display(),
            engine.flags_source(),
            engine.tls_flag()
        ))
        .hint(engine.no_tls_hint(&spec.pool)));
    }
    let unknown = known.unknown(shown);
    if !unknown.is_empty() {
        let list: Vec<String> = unknown.iter().map(|u| u.to_string()).collect();
        return Err(StepError::new(format!(
            "{} {} not accepted by {} ({}): {}",
            if unknown.len() == 1 { "flag" } else { "flags" },
            list.join(", "),
            binary.display(),
            digest,
            "the server would exit while loading"
        ))
        .hint(engine.unknown_flags_hint(&spec.pool, binary)));
    }
    Ok(())
}

/// The binary a replica is about to run, and what it says about itself.
struct BinaryOf<'a> {
    binary: &'a Path,
    digest: &'a str,
    known: &'a KnownFlags,
    /// The environment it runs in.
    env: &'a BTreeMap<String, String>,
}

/// A GPU pool's binary lists a device of the pool's backend: a build without GPU support would
/// serve the pool from the CPU (issue 15 finding 5). Asked before anything starts. A binary
/// that cannot list its devices (an older build) is let through: the probe checks where the
/// server says it loaded the model.
fn check_devices(
    cx: &StepContext<'_>,
    spec: &Spawn,
    engine: &dyn RuntimeEngine,
    b: &BinaryOf<'_>,
    cache: &Path,
) -> Result<(), StepError> {
    if spec.backend == Backend::Cpu {
        return Ok(());
    }
    let name = replica_name(&spec.pool, spec.replica);
    let devices = engine
        .backend_devices(b.binary, (b.digest, b.known), spec.backend, b.env, cache)
        .map_err(|e| {
            StepError::new(e.message)
                .tail(e.tail)
                .hint("check that the binary runs on this machine (shared libraries, GPU driver)")
                .with_command(e.command)
        })?;
    let backend = spec.backend.as_str().to_uppercase();
    match devices {
        BackendDevices::Listed(_) => Ok(()),
        BackendDevices::Unknown => {
            note(
                cx,
                &format!(
                    "{name}: `{} {}` is not known to this build; its load report will show whether the model is on the GPU",
                    b.binary.display(),
                    engine.devices_source()
                ),
            );
            Ok(())
        }
        BackendDevices::Missing(listed) => {
            let what = if listed.is_empty() {
                "no device at all: a build without GPU support".to_string()
            } else {
                format!("only {}", listed.join("; "))
            };
            Err(StepError::new(format!(
                "{name}: pool {} has backend {}, but `{} {}` ({}) lists no {backend} device, {what}; the server would run on the CPU, so nothing was started",
                spec.pool,
                spec.backend.as_str(),
                b.binary.display(),
                engine.devices_source(),
                b.digest,
            ))
            .hint(engine.no_device_hint(&spec.pool, spec.backend)))
        }
    }
}

/// The pool's key files (`api_key: {file}`, `listen.tls.key_file`) are private, and its TLS
/// certificate holds a certificate.
fn check_key_files(spec: &Spawn, cx: &StepContext<'_>) -> Result<(), StepError> {
    let on = |e: StepError| {
        let message = format!("{}: {}", replica_name(&spec.pool, spec.replica), e.message);
        StepError { message, ..e }
    };
    if let Some(SecretRef::File(path)) = &spec.api_key {
        check_private("API key file", Path::new(&cx.expand(path))).map_err(on)?;
    }
    if let Some(tls) = &spec.tls {
        check_private("TLS private key file", Path::new(&cx.expand(&tls.key_file))).map_err(on)?;
        crate::pinned_tls::read_leaf(Path::new(&cx.expand(&tls.cert_file))).map_err(|e| {
            on(StepError::new(e).hint(format!(
                "point `listen.tls.cert_file` of pool {} at the PEM certificate the server presents",
                spec.pool
            )))
        })?;
    }
    Ok(())
}

/// The value after `flag` in an argv.
fn flag_value(argv: &[String], flag: &str) -> Option<String> {
    argv.iter()
        .position(|a| a == flag)
        .and_then(|i| argv.get(i + 1))
        .cloned()
}

/// Stop the server this replica ran before: the one recorded in `cx.previous`, else the one its
/// pid file names (an apply died before recording it), else any process carrying this
/// replica's marker (its state and pid file are gone). Alone: other replicas are not touched.
fn stop_previous(
    cx: &StepContext<'_>,
    name: &str,
    server_log: &Path,
    pid_file: &Path,
) -> Result<(), StepError> {
    let recorded = cx.previous.as_ref().and_then(ServerHandle::of_outputs);
    let servers = match recorded.as_ref().and_then(ServerHandle::process) {
        Some(s) => vec![s.clone()],
        None => match process::find_by_pid_file(
            pid_file,
            server_log,
            &identity::instance_id(&cx.roots.runtime, name),
        ) {
            Ok(Some(s)) => vec![s],
            Ok(None) => by_marker(&cx.roots.runtime, name),
            Err(warning) => {
                note(cx, &format!("warning: {warning}"));
                by_marker(&cx.roots.runtime, name)
            }
        },
    };
    for server in servers {
        if !server.is_running() {
            // Exited: helpers it forked (carrying its marker, holding its port's reservation)
            // still go. A pid that is another process now is not signalled.
            let _ = process::stop(&server, DEFAULT_GRACE);
            continue;
        }
        note(
            cx,
            &format!(
                "stopping the previous server of {name} (pid {})",
                server.pid
            ),
        );
        let how = process::stop(&server, DEFAULT_GRACE).map_err(|e| {
            StepError::new(format!(
                "cannot stop the previous server of {name} (pid {}): {e}",
                server.pid
            ))
            .hint("stop it by hand, then rerun apply")
        })?;
        note(cx, &format!("previous server of {name}: {how}"));
    }
    let _ = std::fs::remove_file(pid_file);
    Ok(())
}

/// Running processes that carry the marker of replica `name` of this runtime dir.
fn by_marker(runtime: &str, name: &str) -> Vec<ServerProcess> {
    let wanted = identity::instance_id(runtime, name);
    identity::find_by_marker(runtime, None)
        .into_iter()
        .filter(|(_, m)| *m == wanted)
        .filter_map(|(pid, _)| ServerProcess::of_pid(pid))
        .collect()
}

/// The configured port (free, else an error naming its holder) or the first free one from the
/// base, preferring the port this replica had last time.
fn choose_port(spec: &Spawn, cx: &StepContext<'_>, name: &str) -> Result<u16, StepError> {
    // The port this replica had: taken again when free and reserved by nobody.
    let previous = cx.previous::<SpawnOutputs>().map(|p| p.port);
    pick_port(spec, cx, name, previous)
}

fn pick_port(
    spec: &Spawn,
    cx: &StepContext<'_>,
    name: &str,
    previous: Option<u16>,
) -> Result<u16, StepError> {
    match spec.port {
        PortSpec::Fixed { port } => {
            if port::reserve(&spec.host, port) {
                return Ok(port);
            }
            let who = port::describe_holder(port);
            Err(StepError::new(format!(
                "port {port} for {name} on {} is already in use {who}",
                spec.host
            ))
            .hint(format!(
                "stop that process, or give pool {} another port in `provisioning.ports` (or none, for the first free one)",
                spec.pool
            )))
        }
        PortSpec::Auto { base } => {
            let excluded = &spec.reserved_ports;
            let port =
                port::reserve_auto(&spec.host, base, previous, excluded).ok_or_else(|| {
                    StepError::new(format!("no free port from {base} for {name}"))
                        .hint("set `provisioning.ports` to free ports")
                })?;
            note(cx, &format!("{name}: port {port} (first free from {base})"));
            Ok(port)
        }
    }
}

/// How long a fresh server may take to show its marker (exec is microseconds).
const MARKER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The server's environment, its `${secret:env.NAME}` placeholders filled in from the step's
/// secrets (only here, for the process: never logged or stored). A plan that lacks one (read
/// back from JSON alone) starts nothing, naming the secret, rather than a server whose key is
/// the text of a placeholder.
fn server_env(
    spec: &Spawn,
    cx: &StepContext<'_>,
    engine: &dyn RuntimeEngine,
) -> Result<BTreeMap<String, String>, StepError> {
    let mut env: BTreeMap<String, String> = spec
        .env
        .iter()
        .map(|(k, v)| Ok((k.clone(), cx.expand_secrets(v)?)))
        .collect::<Result<_, StepError>>()?;
    if let Some(key) = &spec.api_key {
        let value = key.resolve(|p| cx.expand(p)).map_err(|e| {
            StepError::new(format!("{}: {e}", replica_name(&spec.pool, spec.replica)))
                .hint("set the variable or write the file named by the pool's `api_key`")
        })?;
        env.insert(engine.api_key_env().into(), value);
    }
    Ok(env)
}

/// What a server's environment is: provision's own, less `dropped`, with `set` set.
struct ServerEnv<'e> {
    set: &'e BTreeMap<String, String>,
    dropped: &'e [std::ffi::OsString],
}

/// The variables of provision's own environment a server does not inherit (unless its pool
/// sets them): those the engine reads as settings, which would change the server outside its
/// plan (`LLAMA_ARG_N_GPU_LAYERS=0` would move a GPU pool's layers to the CPU), and those whose
/// names mark secrets (another pool's API key, a cloud token), which a server has no use for.
fn not_inherited(
    engine: &dyn RuntimeEngine,
    set: &BTreeMap<String, String>,
) -> Vec<std::ffi::OsString> {
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| {
            let Some(n) = name.to_str() else {
                return false;
            };
            !set.contains_key(n)
                && (engine.reads_env(n) || provision_plan::redact::is_secret_name(n))
        })
        .collect()
}

/// Start the process: its own session (so it outlives apply and stops as a group), stdin from
/// /dev/null, stdout and stderr to the log (the previous run's log kept as `<log>.1`), and a
/// copy of `port`'s host-wide reservation, its only other descriptor, so the port stays
/// reserved while the server lives (loading, after this apply is done or killed).
#[allow(clippy::too_many_arguments)]
fn launch(
    cx: &StepContext<'_>,
    argv: &[String],
    shown: &[String],
    env: &ServerEnv<'_>,
    spec: &Spawn,
    server_log: &Path,
    port: u16,
) -> Result<ServerProcess, StepError> {
    if cx.cancel.is_cancelled() {
        return Err(StepError::cancelled());
    }
    let log_error = |e: std::io::Error| {
        StepError::new(format!(
            "cannot write the server log {}: {e}",
            server_log.display()
        ))
        .hint("check that the runtime directory is writable and the disk is not full")
    };
    if let Some(dir) = server_log.parent().filter(|d| !d.as_os_str().is_empty()) {
        provision_executor::private_file::create_dir_all(dir).map_err(log_error)?;
    }
    if server_log.exists() {
        std::fs::rename(server_log, rotated(server_log)).map_err(log_error)?;
    }
    // 0600, never through a symbolic link: the server may print anything it was given.
    let mut log = provision_executor::private_file::open_append(server_log).map_err(log_error)?;
    let shown_env: Vec<String> = spec
        .env
        .iter()
        .map(|(k, v)| format!("{k}={}", provision_plan::secret_placeholder::shown(v)))
        .collect();
    writeln!(
        log,
        "[provision] {} starting {}: {}{}",
        now_rfc3339(),
        replica_name(&spec.pool, spec.replica),
        if shown_env.is_empty() {
            String::new()
        } else {
            format!("{} ", shown_env.join(" "))
        },
        shown.join(" ")
    )
    .map_err(log_error)?;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| StepError::new("empty argv"))?;
    // The marker that proves, later, that this process is the server provision started here.
    let instance =
        identity::instance_id(&cx.roots.runtime, &replica_name(&spec.pool, spec.replica));
    let mut cmd = Command::new(program);
    for name in env.dropped {
        cmd.env_remove(name);
    }
    cmd.args(args)
        .envs(env.set)
        .env(identity::MARKER_VAR, &instance)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(log_error)?)
        .stderr(log);
    // Our copy of the reservation, close-on-exec: held until the child has exec'd (or failed).
    let reservation = port::inheritable(port);
    let inherited = reservation.as_ref().map(AsRawFd::as_raw_fd);
    // SAFETY: setsid(2) and fcntl(2) are async-signal-safe; nothing else runs between fork and
    // exec. `inherited` is an fd this process keeps open until `spawn` returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = inherited {
                // Only this copy, only in this child, survives exec.
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    drop(reservation);
    let child = spawned.map_err(|e| {
        StepError::new(format!(
            "cannot start `{}`: {e}",
            cx.redactor.redact(&shown.join(" "))
        ))
        .hint("check that the binary is executable and built for this machine")
    })?;
    let pid = child.id();
    process::register(child);
    // Until exec has filled in its environment, the marker is not visible: a check then would
    // take our own server for a stranger.
    identity::await_marker(pid, &instance, MARKER_WAIT);
    let mut server = ServerProcess::of_pid(pid).ok_or_else(|| {
        StepError::new(format!(
            "the server (pid {pid}) vanished right after it started"
        ))
        .tail(replica::server_log_tail(cx, server_log))
    })?;
    server.instance = Some(instance);
    Ok(server)
}
