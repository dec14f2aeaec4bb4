//! A stand-in for llama-server, for the fault tests of provision's spawn, probe, handoff, stop
//! and supervision. It takes llama-server's command line (an unknown flag fails the way the real
//! one does: `error: invalid argument: --bogus`), prints `--help` in its format, and speaks
//! `/health` (refused, then 503 "Loading model", then 200), `/props`, `/v1/models`, `/metrics`
//! (only with `--metrics`) and `/completion` on 127.0.0.1.
//!
//! Faults, from the environment:
//! - `FAKE_LOAD_MS=N`: answer 503 for N ms before 200 (default 0)
//! - `FAKE_BIND_DELAY_MS=N`: bind the port only after N ms (connection refused meanwhile)
//! - `FAKE_NEVER_BIND=1`: never bind, never exit
//! - `FAKE_BIND_FAIL_LINGER_MS=N`: when the port is taken, print "couldn't bind" and stay
//!   alive N ms before exiting (a server slow to tear down), so a probe can see whoever holds
//!   the port answer in its place
//! - `FAKE_CRASH_DURING_LOAD_MS=N`: exit with `FAKE_EXIT_CODE` (default 1) N ms into loading
//! - `FAKE_CRASH_AFTER_READY_MS=N`: abort (SIGABRT) N ms after becoming ready; with
//!   `FAKE_CRASH_ONCE_FILE=PATH` only when PATH does not exist (it is created first)
//! - `FAKE_IGNORE_SIGTERM=1`: ignore SIGTERM (only SIGKILL stops it)
//! - `FAKE_NO_PROPS=1`: `/props` answers 404 (the version comes from elsewhere)
//! - `FAKE_CLOSE_LISTENER_AFTER_READY_MS=N`: N ms after becoming ready, close the listening
//!   socket and live on (its port is free for another process to take)
//! - `LLAMA_API_KEY=KEY` (as llama-server): the key, when `--api-key` is not given
//! - `FAKE_CHILD=1`: start a helper process (`sleep 600`) in the server's process group: a
//!   stop must take it too
//!
//! TLS, as llama-server built with OpenSSL: `--ssl-cert-file PATH --ssl-key-file PATH` (or
//! `LLAMA_ARG_SSL_CERT_FILE` / `LLAMA_ARG_SSL_KEY_FILE`) serve https only, with that PEM
//! certificate chain and key.
//! - `FAKE_NO_TLS=1`: a build without OpenSSL: `--help` lists no `--ssl-*` flag and they are
//!   invalid arguments
//! - `FAKE_NO_FIT=1`: a build older than `--fit`: `--help` lists no `-fit, --fit` and it is
//!   an invalid argument
//! - `FAKE_SSL_CERT_FILE=PATH`, `FAKE_SSL_KEY_FILE=PATH`: present this certificate and key
//!   instead of the configured ones (a server that is not who the config says)
//!
//! Devices and the load report, in llama.cpp's formats:
//! - `FAKE_GPUS=N` (default 1): the CUDA devices this build sees (those of
//!   `CUDA_VISIBLE_DEVICES` below N, when set); `0` is a CPU-only build: `--list-devices`
//!   prints `(none)` and `-ngl` gets llama.cpp's "no usable GPU found" warning
//! - `FAKE_OFFLOAD=N`: put only N layers on the GPUs whatever `-ngl` asks (as `--fit on` may)
//! - `FAKE_NO_LIST_DEVICES=1`: a build older than `--list-devices`
//! - `FAKE_LIST_DEVICES_COUNT=PATH`: append a line to PATH at each `--list-devices`
//! - `FAKE_N_LAYER=N` (default 2): the model's layers
//!
//! With `-lv 4` (or `-v`) the load report is printed as recent llama.cpp prints it: `load_tensors:
//! offloaded N/M layers to GPU` (GPU builds) and one `… buffer size = X MiB` line per buffer and
//! device (`CUDA0`, `CPU_Mapped`, `CUDA_Host`, `CPU`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// `FAKE_CLOSE_LISTENER_AFTER_READY_MS`: the accept loop stops at its next connection.
static CLOSE_LISTENER: AtomicBool = AtomicBool::new(false);

/// Flags taking a value, and switches, as the help lists them (every spelling).
const VALUED: &[&[&str]] = &[
    &["--host"],
    &["--port"],
    &["-m", "--model"],
    &["-t", "--threads"],
    &["-c", "--ctx-size"],
    &["-ub", "--ubatch-size"],
    &["-fa", "--flash-attn"],
    &["-ngl", "--gpu-layers", "--n-gpu-layers"],
    &["-np", "--parallel"],
    &["-ts", "--tensor-split"],
    &["-fit", "--fit"],
    &["--api-key"],
    &["-hft", "--hf-token"],
    &["-a", "--alias"],
    &["--ssl-key-file"],
    &["--ssl-cert-file"],
    &["-lv", "--verbosity", "--log-verbosity"],
];

/// Flags a build without OpenSSL does not have.
const TLS_FLAGS: &[&str] = &["--ssl-key-file", "--ssl-cert-file"];

/// Whether this "build" has TLS.
fn with_tls() -> bool {
    !env_on("FAKE_NO_TLS")
}

/// The spellings of the valued flags this build accepts.
fn valued() -> impl Iterator<Item = &'static &'static [&'static str]> {
    let no_fit = env_on("FAKE_NO_FIT");
    VALUED
        .iter()
        .filter(|s| with_tls() || !s.iter().any(|f| TLS_FLAGS.contains(f)))
        .filter(move |s| !(no_fit && s.contains(&"--fit")))
}
const SWITCHES: &[&[&str]] = &[
    &["-h", "--help", "--usage"],
    &["--version"],
    &["-cb", "--cont-batching"],
    &["-nocb", "--no-cont-batching"],
    &["--webui", "--no-webui"],
    &["--metrics"],
    &["-v", "--verbose", "--log-verbose"],
    &["--list-devices"],
];

/// The spellings of the switches this build accepts.
fn switches() -> impl Iterator<Item = &'static &'static [&'static str]> {
    let no_list = env_on("FAKE_NO_LIST_DEVICES");
    SWITCHES
        .iter()
        .filter(move |s| !(no_list && s.contains(&"--list-devices")))
}

const VERSION: &str = "version: 0.5.0-dev (build 1, commit 46fdb7a)";
const BUILD_INFO: &str = "b1-46fdb7a";

fn help() -> String {
    let mut out = String::from("----- common params -----\n\n");
    for spellings in valued() {
        out.push_str(&format!(
            "{:<40}{}\n",
            format!("{} N", spellings.join(", ")),
            "a setting"
        ));
    }
    for spellings in switches() {
        out.push_str(&format!("{:<40}{}\n", spellings.join(", "), "a switch"));
    }
    out
}

fn env_ms(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn env_on(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

struct Args {
    values: BTreeMap<String, String>,
    switches: Vec<String>,
}

fn parse_args() -> Args {
    let mut values = BTreeMap::new();
    let mut given = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if let Some(spellings) = valued().find(|s| s.contains(&arg.as_str())) {
            let Some(v) = it.next() else {
                eprintln!("error: expected value for argument {arg}");
                exit(1);
            };
            if spellings.contains(&"--n-gpu-layers") && gpus() == 0 {
                // As llama.cpp's argument parser, for a build without GPU support.
                eprintln!("warning: no usable GPU found, --gpu-layers option will be ignored");
                eprintln!("warning: one possible reason is that llama.cpp was compiled without GPU support");
                eprintln!("warning: consult docs/build.md for compilation instructions");
            }
            values.insert(spellings.last().unwrap().to_string(), v);
        } else if switches().any(|s| s.contains(&arg.as_str())) {
            given.push(arg);
        } else {
            eprintln!("error: invalid argument: {arg}");
            exit(1);
        }
    }
    Args {
        values,
        switches: given,
    }
}

pub fn main() {
    let args = parse_args();
    if args.switches.iter().any(|s| s == "--help" || s == "-h") {
        print!("{}", help());
        return;
    }
    if args.switches.iter().any(|s| s == "--list-devices") {
        list_devices();
        return;
    }
    if args.switches.iter().any(|s| s == "--version") {
        eprintln!("{VERSION}");
        eprintln!("built with fake for testing");
        return;
    }
    if env_on("FAKE_IGNORE_SIGTERM") {
        // SAFETY: setting a signal disposition to SIG_IGN.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
    }
    if env_on("FAKE_CHILD") {
        let _ = std::process::Command::new("sleep").arg("600").spawn();
    }
    let model = args.values.get("--model").cloned().unwrap_or_default();
    println!("main: build = 1 (46fdb7a), fake llama-server");
    if std::fs::metadata(&model).is_err() {
        eprintln!("gguf_init_from_file: failed to open GGUF file '{model}'");
        eprintln!("main: exiting due to model loading error");
        exit(1);
    }
    if env_on("FAKE_NEVER_BIND") {
        println!("main: loading model (this fake never binds)");
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    }
    if let Some(ms) = env_ms("FAKE_BIND_DELAY_MS") {
        thread::sleep(Duration::from_millis(ms));
    }
    let host = args
        .values
        .get("--host")
        .cloned()
        .unwrap_or("127.0.0.1".into());
    let port = args.values.get("--port").cloned().unwrap_or("8080".into());
    let tls = tls_config(&args);
    let listener = match TcpListener::bind(format!("{host}:{port}")) {
        Ok(l) => l,
        Err(_) => {
            eprintln!("couldn't bind HTTP server socket, hostname: {host}, port: {port}");
            if let Some(ms) = env_ms("FAKE_BIND_FAIL_LINGER_MS") {
                thread::sleep(Duration::from_millis(ms));
            }
            exit(1);
        }
    };
    println!("main: HTTP server is listening, hostname: {host}, port: {port}");
    let ready = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let metrics = args.switches.iter().any(|s| s == "--metrics");
    // Like llama-server: `--api-key`, else `LLAMA_API_KEY`; with a key, everything but
    // `/health` answers 401 without `Authorization: Bearer KEY`.
    let key = args
        .values
        .get("--api-key")
        .cloned()
        .or_else(|| std::env::var("LLAMA_API_KEY").ok())
        .filter(|k| !k.is_empty());
    serve_connections(listener, Arc::clone(&ready), metrics, key, tls);

    // Loading.
    load(started);
    if args
        .switches
        .iter()
        .any(|s| matches!(s.as_str(), "-v" | "--verbose" | "--log-verbose"))
        || args
            .values
            .get("--log-verbosity")
            .and_then(|v| v.parse::<i64>().ok())
            .is_some_and(|v| v >= 4)
    {
        load_report(&args, &model);
    }
    println!("main: model loaded");
    println!("main: server is listening on http://{host}:{port} - starting the main loop");
    ready.store(true, Ordering::SeqCst);
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    println!("main: ready at unix_ms={unix_ms}");
    let _ = std::io::stdout().flush();

    after_ready(&host, &port);
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

/// Answer each connection on its own thread, as ready once `ready` is set (TLS when `tls`).
fn serve_connections(
    listener: TcpListener,
    ready: Arc<AtomicBool>,
    metrics: bool,
    key: Option<String>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            if CLOSE_LISTENER.load(Ordering::SeqCst) {
                break; // the listener is dropped: the port is free
            }
            let ready = ready.load(Ordering::SeqCst);
            let key = key.clone();
            let tls = tls.clone();
            thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = match tls {
                    Some(config) => match rustls::ServerConnection::new(config) {
                        Ok(tls) => serve(
                            rustls::StreamOwned::new(tls, conn),
                            ready,
                            metrics,
                            key.as_deref(),
                        ),
                        Err(_) => Ok(()),
                    },
                    None => serve(conn, ready, metrics, key.as_deref()),
                };
            });
        }
    });
}

/// "Load the model": print loading lines for `FAKE_LOAD_MS` after `started`, crash at
/// `FAKE_CRASH_DURING_LOAD_MS`.
fn load(started: Instant) {
    let load = Duration::from_millis(env_ms("FAKE_LOAD_MS").unwrap_or(0));
    let crash_at = env_ms("FAKE_CRASH_DURING_LOAD_MS").map(Duration::from_millis);
    let mut line = 0;
    while started.elapsed() < load || crash_at.is_some() {
        if let Some(c) = crash_at {
            if started.elapsed() >= c {
                eprintln!("llama_model_load: error loading model: tensor 'blk.0.attn_q.weight' data is not within the file bounds");
                eprintln!("main: exiting due to model loading error");
                exit(env_ms("FAKE_EXIT_CODE").unwrap_or(1) as i32);
            }
        }
        line += 1;
        println!("load_tensors: loading line {line}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// The CUDA devices this build sees: `FAKE_GPUS` (default 1), those of `CUDA_VISIBLE_DEVICES`
/// among them when it is set.
fn gpus() -> usize {
    let built: usize = std::env::var("FAKE_GPUS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(v) => v
            .split(',')
            .filter_map(|d| d.trim().parse::<usize>().ok())
            .filter(|d| *d < built)
            .count(),
        Err(_) => built,
    }
}

/// `--list-devices`, as llama.cpp prints it (a CUDA build's `ggml_cuda_init` lines first).
fn list_devices() {
    if let Ok(count) = std::env::var("FAKE_LIST_DEVICES_COUNT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(count)
            .expect("the count file");
        let _ = writeln!(f, "--list-devices");
    }
    let n = gpus();
    if n > 0 {
        eprintln!("ggml_cuda_init: found {n} CUDA devices:");
        for i in 0..n {
            eprintln!("  Device {i}: NVIDIA GeForce RTX 3090, compute capability 8.6, VMM: yes");
        }
    }
    println!("Available devices:");
    if n == 0 {
        println!("  (none)");
    }
    for i in 0..n {
        println!("  CUDA{i}: NVIDIA GeForce RTX 3090 (24135 MiB, 23700 MiB free)");
    }
}

/// A log line as recent llama.cpp writes it: its time since start, its level, the text.
fn log_line(text: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let us = START.get_or_init(Instant::now).elapsed().as_micros();
    println!(
        "{}.{:02}.{:03}.{:03} I {text}",
        us / 3_600_000_000,
        us / 60_000_000 % 60,
        us / 1_000_000 % 60,
        us / 1_000 % 1_000
    );
}

/// The load report: the layers offloaded (a GPU build) and each buffer per device. The weights
/// are the model file's size, spread over the GPUs with the layers; the token embeddings
/// (a tenth) stay in host memory, as llama.cpp keeps them.
fn load_report(args: &Args, model: &str) {
    let n_layer: u64 = env_ms("FAKE_N_LAYER").unwrap_or(2);
    let of = n_layer + 1;
    let asked = match args.values.get("--n-gpu-layers").map(String::as_str) {
        None | Some("auto" | "all") => of,
        Some(v) => v
            .parse::<i64>()
            .map_or(of, |n| if n < 0 { of } else { (n as u64).min(of) }),
    };
    let gpus = gpus() as u64;
    let layers = if gpus == 0 {
        0
    } else {
        env_ms("FAKE_OFFLOAD").unwrap_or(asked).min(of)
    };
    let mib = |bytes: f64| bytes / 1_048_576.0;
    let size = std::fs::metadata(model).map_or(0, |m| m.len()) as f64;
    let host_weights = size / 10.0 + size * 0.9 * (of - layers) as f64 / of as f64;
    let gpu_weights = size * 0.9 * layers as f64 / of as f64;
    log_line("load_tensors: loading model tensors, this can take a while... (load_mode = mmap)");
    if gpus > 0 {
        if layers > 0 {
            log_line("load_tensors: offloading output layer to GPU");
        }
        log_line(&format!(
            "load_tensors: offloading {} repeating layers to GPU",
            layers.saturating_sub(1)
        ));
        log_line(&format!(
            "load_tensors: offloaded {layers}/{of} layers to GPU"
        ));
    }
    let on_gpus = layers > 0;
    for i in 0..gpus.min(if on_gpus { gpus } else { 0 }) {
        log_line(&format!(
            "load_tensors: {:>12} model buffer size = {:8.2} MiB",
            format!("CUDA{i}"),
            mib(gpu_weights / gpus as f64)
        ));
    }
    log_line(&format!(
        "load_tensors: {:>12} model buffer size = {:8.2} MiB",
        "CPU_Mapped",
        mib(host_weights)
    ));
    let host = if gpus > 0 { "CUDA_Host" } else { "CPU" };
    log_line(&format!(
        "llama_context: {host:>10}  output buffer size = {:8.2} MiB",
        0.0
    ));
    let kv = 128.0 * 1024.0 * n_layer as f64 / 2.0;
    let compute = 660_000.0;
    let on = |what: &str, bytes: f64| {
        if on_gpus {
            for i in 0..gpus {
                log_line(&format!(
                    "{what}: {:>10} {} buffer size = {:8.2} MiB",
                    format!("CUDA{i}"),
                    if what == "llama_kv_cache" {
                        "KV"
                    } else {
                        "compute"
                    },
                    mib(bytes / gpus as f64)
                ));
            }
        } else {
            log_line(&format!(
                "{what}: {:>10} {} buffer size = {:8.2} MiB",
                "CPU",
                if what == "llama_kv_cache" {
                    "KV"
                } else {
                    "compute"
                },
                mib(bytes)
            ));
        }
    };
    on("llama_kv_cache", kv);
    on("sched_reserve", compute);
}

/// Once ready: close the listener (`FAKE_CLOSE_LISTENER_AFTER_READY_MS`) or crash
/// (`FAKE_CRASH_AFTER_READY_MS`, once with `FAKE_CRASH_ONCE_FILE`) when asked.
fn after_ready(host: &str, port: &str) {
    if let Some(ms) = env_ms("FAKE_CLOSE_LISTENER_AFTER_READY_MS") {
        thread::sleep(Duration::from_millis(ms));
        CLOSE_LISTENER.store(true, Ordering::SeqCst);
        // Wake the accept loop, which then drops the listener.
        let _ = TcpStream::connect(format!("{host}:{port}"));
    }
    if let Some(ms) = env_ms("FAKE_CRASH_AFTER_READY_MS") {
        let once = std::env::var("FAKE_CRASH_ONCE_FILE").ok();
        let crash = match &once {
            Some(f) => std::fs::metadata(f).is_err(),
            None => true,
        };
        if crash {
            if let Some(f) = &once {
                let _ = std::fs::write(f, "crashed");
            }
            thread::sleep(Duration::from_millis(ms));
            eprintln!("GGML_ASSERT: fake crash after ready");
            std::process::abort();
        }
    }
}

/// The TLS server config when TLS is asked for (flags, else llama-server's env variables); a
/// certificate or key that cannot be loaded ends the server as llama-server does.
fn tls_config(args: &Args) -> Option<Arc<rustls::ServerConfig>> {
    let pick = |fake: &str, flag: &str, var: &str| {
        std::env::var(fake)
            .ok()
            .or_else(|| args.values.get(flag).cloned())
            .or_else(|| std::env::var(var).ok().filter(|_| with_tls()))
    };
    let cert = pick(
        "FAKE_SSL_CERT_FILE",
        "--ssl-cert-file",
        "LLAMA_ARG_SSL_CERT_FILE",
    );
    let key = pick(
        "FAKE_SSL_KEY_FILE",
        "--ssl-key-file",
        "LLAMA_ARG_SSL_KEY_FILE",
    );
    let (cert, key) = match (cert, key) {
        (None, None) => return None,
        (Some(c), Some(k)) => (c, k),
        _ => {
            eprintln!("main: both --ssl-cert-file and --ssl-key-file are needed");
            exit(1);
        }
    };
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Result<Vec<CertificateDer<'static>>, _> =
        CertificateDer::pem_file_iter(&cert).and_then(|i| i.collect());
    let key = PrivateKeyDer::from_pem_file(&key);
    let config = match (certs, key) {
        (Ok(certs), Ok(key)) => rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key)),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("main: cannot load the SSL certificate or key: {e}");
            exit(1);
        }
    };
    match config {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            eprintln!("main: bad SSL certificate or key: {e}");
            exit(1);
        }
    }
}

fn serve(
    mut conn: impl Read + Write,
    ready: bool,
    metrics: bool,
    key: Option<&str>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut conn);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut parts = request.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut auth = None;
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("authorization:") {
            auth = Some(h["authorization:".len()..].trim().to_string());
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    drop(reader);
    let authorised = match key {
        None => true,
        Some(k) => auth.as_deref() == Some(&format!("Bearer {k}")),
    };
    let (status, text): (u16, String) = match (method.as_str(), path.as_str()) {
        (_, "/health" | "/v1/health") if !ready => (
            503,
            r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#
                .into(),
        ),
        (_, "/health" | "/v1/health") => (200, r#"{"status":"ok"}"#.into()),
        _ if !ready => (
            503,
            r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#
                .into(),
        ),
        _ if !authorised => (
            401,
            r#"{"error":{"code":401,"message":"Invalid API Key","type":"authentication_error"}}"#
                .into(),
        ),
        ("GET", "/props") if env_on("FAKE_NO_PROPS") => (404, "File Not Found".into()),
        ("GET", "/props") => (
            200,
            format!(r#"{{"build_info":"{BUILD_INFO}","total_slots":1}}"#),
        ),
        ("GET", "/v1/models") => (
            200,
            r#"{"object":"list","data":[{"id":"fake","object":"model","meta":{"n_ctx":256}}]}"#
                .into(),
        ),
        ("GET", "/metrics") if metrics => (
            200,
            "# HELP llamacpp:prompt_tokens_total fake\nllamacpp:prompt_tokens_total 0\n".into(),
        ),
        ("GET", "/metrics") => (
            501,
            r#"{"error":{"code":501,"message":"This server does not support metrics endpoint. Start it with `--metrics`","type":"not_supported_error"}}"#.into(),
        ),
        ("POST", "/completion") => (
            200,
            format!(r#"{{"content":" fake","system_fingerprint":"{BUILD_INFO}"}}"#),
        ),
        _ => (404, "File Not Found".into()),
    };
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        501 => "Not Implemented",
        _ => "Service Unavailable",
    };
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    conn.flush()?;
    drop(conn);
    Ok(())
}
