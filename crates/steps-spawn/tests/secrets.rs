//! Secrets stay out of the server's argv (`/proc/<pid>/cmdline` is readable by every local
//! user) and out of everything provision writes, while the server still requires its key and
//! provision's probes still present it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Pool, Rig};
use provision_steps_spawn as spawn;

const API_KEY: &str = "sk-argv-must-not-see-4711";
const HF_TOKEN: &str = "hf_argv_must_not_see_0815";
const DB_PASS: &str = "db-pass-must-not-see-1234";
const URL_PASSWORD: &str = "url-password-must-not-see";
const SIGNATURE: &str = "signature0must0not0see";

/// The status line of `GET path` on the replica, with `Authorization: Bearer key` if given.
fn status_of(port: u16, path: &str, key: Option<&str>) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    reply.lines().next().unwrap_or_default().to_string()
}

fn secret_pool() -> Pool<'static> {
    Pool {
        flags: &[
            "--api-key",
            API_KEY,
            "--hf-token",
            HF_TOKEN,
            "--threads",
            "1",
        ],
        env: &[("DB_PASS", DB_PASS)],
        ..Pool::default()
    }
}

#[test]
fn no_secret_reaches_the_server_argv_and_the_key_is_still_required() {
    let mut rig = Rig::new(&secret_pool());
    rig.up(0).unwrap();
    let server = rig.server(0);

    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid)).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    for secret in [API_KEY, HF_TOKEN, DB_PASS] {
        assert!(!cmdline.contains(secret), "{secret} in argv: {cmdline}");
    }
    // They went by the environment, which only the owner and root can read.
    let environ = std::fs::read(format!("/proc/{}/environ", server.pid)).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.contains(&format!("LLAMA_API_KEY={API_KEY}\0")));
    assert!(environ.contains(&format!("HF_TOKEN={HF_TOKEN}\0")));

    // The server requires the key, and the probe presented it (the version came from /props).
    let port = rig.spawned(0).port;
    assert!(status_of(port, "/health", None).contains(" 200 "));
    assert!(status_of(port, "/props", None).contains(" 401 "));
    assert!(status_of(port, "/props", Some("wrong")).contains(" 401 "));
    assert!(status_of(port, "/props", Some(API_KEY)).contains(" 200 "));
    assert_eq!(rig.probed(0).engine_version_source, "/props");

    let written = rig.everything_written();
    for secret in [API_KEY, HF_TOKEN, DB_PASS] {
        assert!(!written.contains(secret), "{secret} leaked:\n{written}");
    }
}

#[test]
fn url_credentials_never_reach_state_logs_or_handoffs() {
    let model_id = format!(
        "https://bob:{URL_PASSWORD}@models.example/m.gguf?X-Amz-Expires=60&X-Amz-Signature={SIGNATURE}"
    );
    let config =
        common::config(&secret_pool()).replace("model: tiny", &format!("model: '{model_id}'"));
    let mut rig = Rig::with_config(&config);
    rig.up(0).unwrap();
    let written = rig.everything_written();
    assert!(written.contains("X-Amz-Signature=<redacted>"), "{written}");
    for secret in [URL_PASSWORD, SIGNATURE, API_KEY, HF_TOKEN, DB_PASS] {
        assert!(!written.contains(secret), "{secret} leaked:\n{written}");
    }
}

#[test]
fn a_plan_without_its_secrets_starts_nothing() {
    let mut rig = Rig::new(&secret_pool());
    // What a plan read back from its JSON is: the secrets were never in it.
    rig.ws.plan = serde_json::from_str(&rig.ws.plan.to_json()).unwrap();
    let err = rig.run("spawn:fake/r0").unwrap_err();
    assert!(
        err.message.contains("step spawn:fake/r0:") && err.message.contains("secret `env."),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap().contains("plan again"));
    assert!(!rig.server_log(0).exists(), "a server was started");
}

const FILE_KEY: &str = "sk-from-a-key-file-2718";

/// A rig whose pool listens on `host` with `api_key` (YAML) and the key file `config/key.txt`.
fn listening_rig(host: &str, api_key: &str) -> Rig {
    let config = common::config(&Pool::default()).replace(
        "    provisioning:\n",
        &format!("    listen: {{host: {host}}}\n    api_key: {api_key}\n    provisioning:\n"),
    );
    let rig = Rig::with_config(&config);
    let key = rig.ws.dir.path().join("config/key.txt");
    std::fs::write(&key, format!("{FILE_KEY}\n")).unwrap();
    // A key file must be its owner's alone (tests/tls.rs: a looser one is refused).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    rig
}

#[test]
fn a_pool_listening_beyond_loopback_requires_its_key_by_reference() {
    let mut rig = listening_rig("0.0.0.0", "{file: key.txt}");
    rig.up(0).unwrap();
    let server = rig.server(0);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid)).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("--host 0.0.0.0"), "{cmdline}");
    assert!(!cmdline.contains(FILE_KEY), "the key in argv: {cmdline}");

    let port = rig.spawned(0).port;
    assert!(status_of(port, "/props", None).contains(" 401 "));
    assert!(status_of(port, "/props", Some(FILE_KEY)).contains(" 200 "));
    // The probe authenticated.
    assert_eq!(rig.probed(0).engine_version_source, "/props");
    let handoff = common::json_file(&rig.handoff_file(0));
    assert_eq!(handoff["auth"], "bearer");
    assert_eq!(handoff["url"], format!("http://127.0.0.1:{port}"));

    let written = rig.everything_written();
    assert!(!written.contains(FILE_KEY), "the key leaked:\n{written}");
}

#[test]
fn a_key_reference_that_cannot_be_read_starts_nothing() {
    let mut rig = listening_rig("0.0.0.0", "{env: PROVISION_TEST_KEY_SURELY_UNSET}");
    let err = rig.run("spawn:fake/r0").unwrap_err();
    assert!(
        err.message
            .contains("the API key variable PROVISION_TEST_KEY_SURELY_UNSET is not set"),
        "{}",
        err.message
    );
    assert!(!rig.server_log(0).exists(), "a server was started");
}

#[test]
fn a_changed_key_behind_its_reference_makes_the_replica_dirty() {
    let rig = listening_rig("0.0.0.0", "{file: key.txt}");
    let facts = || {
        let cx = rig.cx("spawn:fake/r0");
        let provision_plan::StepSpec::Spawn(spec) = &cx.step.spec else {
            unreachable!()
        };
        provision_steps_spawn::spawn_facts(spec, &cx).unwrap()
    };
    let before = facts();
    assert!(!format!("{before:?}").contains(FILE_KEY));
    std::fs::write(rig.ws.dir.path().join("config/key.txt"), "sk-rotated\n").unwrap();
    let after = facts();
    assert_ne!(before, after, "a rotated key must restart the server");
    assert!(!format!("{after:?}").contains("sk-rotated"));
}

/// `/proc/<pid>/cmdline` (the port made `<port>`) and `/proc/<pid>/environ` of replica 0.
fn argv_and_env(rig: &Rig) -> (Vec<String>, Vec<String>) {
    let server = rig.server(0);
    let port = rig.spawned(0).port.to_string();
    let split = |what: &str| -> Vec<String> {
        let bytes = std::fs::read(format!("/proc/{}/{what}", server.pid)).unwrap();
        String::from_utf8_lossy(&bytes)
            .split('\0')
            .map(|a| if a == port { "<port>".into() } else { a.into() })
            .collect()
    };
    let mut env = split("environ");
    env.sort();
    (split("cmdline"), env)
}

#[test]
fn a_plan_read_back_from_json_starts_the_server_the_in_memory_plan_starts() {
    let config = common::config(&secret_pool());
    let mut rig = Rig::with_config(&config);
    rig.up(0).unwrap();
    let (argv, env) = argv_and_env(&rig);
    assert!(env.contains(&format!("LLAMA_API_KEY={API_KEY}")), "{env:?}");
    let in_memory_probe = rig.probed(0).engine_version_source;
    assert_eq!(in_memory_probe, "/props", "the probe presented the key");
    spawn::stop_server(&rig.spawned(0).into(), Duration::from_millis(200)).unwrap();
    rig.state = Default::default();

    // Written as JSON (no secret in it: placeholders), read back, given its secrets from their
    // sources: the config planned again, as apply plans it.
    let json = rig.ws.plan.to_json();
    for secret in [API_KEY, HF_TOKEN, DB_PASS] {
        assert!(!json.contains(secret), "{secret} in the plan JSON");
    }
    assert!(
        json.contains("\"LLAMA_API_KEY\": \"${secret:env.LLAMA_API_KEY}\""),
        "{json}"
    );
    let in_memory = rig.ws.plan.clone();
    rig.ws.replan(&config);
    let sources = rig.ws.plan.clone();
    rig.ws.plan = provision_plan::secrets::read_back(&json, &sources).unwrap();
    assert_eq!(rig.ws.plan, in_memory);
    rig.up(0).unwrap();
    // The exact argv and environment of the in-memory plan's server, and its probe presented
    // the key (from its own secrets) as the in-memory one did.
    assert_eq!(argv_and_env(&rig), (argv, env));
    assert_eq!(rig.probed(0).engine_version_source, in_memory_probe);
    let written = rig.everything_written();
    for secret in [API_KEY, HF_TOKEN, DB_PASS] {
        assert!(!written.contains(secret), "{secret} leaked:\n{written}");
    }
    // The state records the spec as the executor does: secrets `<redacted>`.
    assert!(
        !written.contains("${secret:"),
        "a placeholder was written:\n{written}"
    );
}

#[test]
fn a_plan_without_an_external_servers_url_credentials_probes_nothing() {
    const PW: &str = "ext-pw-must-not-see-0301";
    let config = format!(
        "pools:
  - id: ext
    engine: llamacpp
    model: ext
    devices: []
    readiness_timeout_ms: 1000
    provisioning:
      mode: external
      external: {{url: 'http://ops:{PW}@127.0.0.1:9'}}
"
    );
    let mut rig = Rig::with_config(&config);
    // What a plan read back from its JSON is: the credentials were never in it.
    rig.ws.plan = serde_json::from_str(&rig.ws.plan.to_json()).unwrap();
    let err = rig.run("probe:ext/r0").unwrap_err();
    assert!(
        err.message.contains("step probe:ext/r0:") && err.message.contains("secret `url.userinfo`"),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap().contains("plan again"));
    assert!(!err.message.contains(PW), "{}", err.message);
}
