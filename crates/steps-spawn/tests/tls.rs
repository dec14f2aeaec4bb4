//! `listen.tls`: the certificate and key reach the server, the probe speaks https trusting
//! exactly the configured certificate (pinned, whatever host name it names), a server
//! presenting another one is not handed off, a binary built without TLS and a key file others
//! may read start nothing. `listen.advertise` names the handoff's host.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{config, json_file, Pool, Rig};
use provision_steps_spawn::http::Http;
use provision_steps_spawn::pinned_tls::read_leaf;

/// A self-signed certificate for `name` and its key, written as `<stem>.crt` / `<stem>.key`
/// (0600) in `dir`.
fn certificate(dir: &Path, stem: &str, name: &str) -> (PathBuf, PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert, key)
}

/// The test pool, serving TLS with `tls/web.crt` and `tls/web.key` beside the config.
fn tls_config(p: &Pool<'_>, listen_extra: &str) -> String {
    config(p).replace(
        "    provisioning:\n",
        &format!(
            "    listen: {{tls: {{cert_file: tls/web.crt, key_file: ./tls/web.key}}{listen_extra}}}\n    provisioning:\n"
        ),
    )
}

/// A rig over `config` with the pool's certificate (for `gpu1.example.com`, not for the
/// 127.0.0.1 the probe dials) in place.
fn tls_rig(config: &str) -> (Rig, PathBuf, PathBuf) {
    let rig = Rig::with_config(config);
    let (cert, key) = certificate(
        &rig.ws.dir.path().join("config/tls"),
        "web",
        "gpu1.example.com",
    );
    (rig, cert, key)
}

fn no_server_started(rig: &Rig) {
    assert!(
        !rig.runtime().join("run/fake-r0.pid").exists(),
        "a pid file was written"
    );
    assert!(!rig.server_log(0).exists(), "a server log was started");
}

#[test]
fn a_tls_pool_is_probed_and_handed_off_over_https_with_the_pinned_certificate() {
    let (mut rig, cert, key) = tls_rig(&tls_config(&Pool::default(), ""));
    rig.up(0).unwrap();

    // The paths reached the server (paths are no secret: on its command line).
    let server = rig.server(0);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid)).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains(&format!(
            "--ssl-cert-file {} --ssl-key-file {}",
            cert.display(),
            key.display()
        )),
        "{cmdline}"
    );

    let port = rig.spawned(0).port;
    let handoff = json_file(&rig.handoff_file(0));
    assert_eq!(handoff["url"], format!("https://127.0.0.1:{port}"));
    assert_eq!(rig.probed(0).engine_version_source, "/props");

    // An orchestrator trusting that certificate reaches it; plain http does not.
    let pinned = Http::pinned(Duration::from_secs(5), read_leaf(&cert).unwrap());
    let health = pinned
        .get(&format!("https://127.0.0.1:{port}/health"), None)
        .unwrap();
    assert_eq!(health.status, 200);
    let plain = Http::new(Duration::from_secs(5), false);
    assert!(plain
        .get(&format!("http://127.0.0.1:{port}/health"), None)
        .is_err());

    // The liveness check of a re-apply speaks https too, and keeps the server.
    let provision_plan::StepSpec::Probe(spec) = &rig.step("probe:fake/r0").spec else {
        unreachable!()
    };
    provision_steps_spawn::check_probe(spec, &rig.cx("probe:fake/r0")).unwrap();
}

#[test]
fn a_server_presenting_another_certificate_is_not_handed_off() {
    let dir = tempfile::tempdir().unwrap();
    let (other_cert, other_key) = certificate(dir.path(), "other", "gpu1.example.com");
    let (other_cert, other_key) = (
        other_cert.display().to_string(),
        other_key.display().to_string(),
    );
    let env = [
        ("FAKE_SSL_CERT_FILE", other_cert.as_str()),
        ("FAKE_SSL_KEY_FILE", other_key.as_str()),
    ];
    let (mut rig, _, _) = tls_rig(&tls_config(
        &Pool {
            env: &env,
            ..Pool::default()
        },
        "",
    ));
    rig.run("spawn:fake/r0").unwrap();
    let server = rig.server(0);
    let err = rig.run("probe:fake/r0").unwrap_err();
    assert!(
        err.message
            .contains("presented a TLS certificate other than the pool's `listen.tls.cert_file`"),
        "{}",
        err.message
    );
    assert!(rig.run("handoff:fake/r0").is_err());
    assert!(!rig.handoff_file(0).exists());
    common::assert_gone(&server);
}

#[test]
fn a_binary_built_without_tls_fails_before_starting_anything() {
    let (mut rig, _, _) = tls_rig(&tls_config(
        &Pool {
            env: &[("FAKE_NO_TLS", "1")],
            ..Pool::default()
        },
        "",
    ));
    let err = rig.run("spawn:fake/r0").unwrap_err();
    assert!(
        err.message.contains("was built without TLS support")
            && err.message.contains("--ssl-key-file"),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap().contains("libssl-dev"));
    no_server_started(&rig);
}

#[test]
fn a_tls_key_file_others_may_read_is_refused() {
    let (mut rig, _, key) = tls_rig(&tls_config(&Pool::default(), ""));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = rig.run("spawn:fake/r0").unwrap_err();
    assert!(
        err.message.contains(&format!(
            "the TLS private key file {} is accessible by group or others (mode 0644)",
            key.display()
        )),
        "{}",
        err.message
    );
    assert!(err
        .hint
        .unwrap()
        .contains(&format!("chmod 600 {}", key.display())));
    no_server_started(&rig);
}

#[test]
fn an_api_key_file_others_may_read_is_refused() {
    let config = config(&Pool::default()).replace(
        "    provisioning:\n",
        "    api_key: {file: web.apikey}\n    provisioning:\n",
    );
    let mut rig = Rig::with_config(&config);
    let key = rig.ws.dir.path().join("config/web.apikey");
    std::fs::write(&key, "sk-test\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = rig.run("spawn:fake/r0").unwrap_err();
    assert!(
        err.message.contains("the API key file") && err.message.contains("mode 0640"),
        "{}",
        err.message
    );
    assert!(err.hint.unwrap().contains("chmod 600"));
    no_server_started(&rig);

    // Made private, the same config starts.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    rig.up(0).unwrap();
}

#[test]
fn the_handoff_names_the_advertised_host_and_the_probe_dials_the_bound_one() {
    let (mut rig, _, _) = tls_rig(&tls_config(
        &Pool::default(),
        ", advertise: gpu1.example.com",
    ));
    rig.up(0).unwrap();
    let port = rig.spawned(0).port;
    assert_eq!(rig.probed(0).url, format!("https://127.0.0.1:{port}"));
    let handoff = json_file(&rig.handoff_file(0));
    assert_eq!(handoff["url"], format!("https://gpu1.example.com:{port}"));
}

#[test]
fn a_certificate_renewed_in_place_changes_the_spawn_facts() {
    let (rig, cert, key) = tls_rig(&tls_config(&Pool::default(), ""));
    let provision_plan::StepSpec::Spawn(spec) = &rig.step("spawn:fake/r0").spec else {
        unreachable!()
    };
    let facts = || provision_steps_spawn::spawn_facts(spec, &rig.cx("spawn:fake/r0")).unwrap();
    let before = facts();
    assert_eq!(before, facts());
    let fact = before["tls_files"].clone();
    let key_text = std::fs::read_to_string(&key).unwrap();
    assert!(!fact.contains(key_text.trim()), "the key itself is a fact");
    let renewed = rig.ws.dir.path().join("renewed");
    let (new_cert, new_key) = certificate(&renewed, "web", "gpu1.example.com");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    assert_ne!(before, facts());
}

#[test]
fn tls_support_is_read_from_help_as_a_real_build_prints_it() {
    use provision_steps_spawn::engine::llamacpp_help::parse_help;
    // llama.cpp built with OpenSSL (tests/data: a real build's --help).
    let real = parse_help(include_str!("data/llama-server-help.txt"));
    assert!(real.0.contains(provision_plan::tls::KEY_FLAG));
    assert!(real.0.contains(provision_plan::tls::CERT_FLAG));
    // The fake: the same lines, gone in a "build without OpenSSL".
    let help = |no_tls: bool| {
        let mut cmd = std::process::Command::new(common::FAKE);
        cmd.arg("--help");
        if no_tls {
            cmd.env("FAKE_NO_TLS", "1");
        }
        parse_help(&String::from_utf8(cmd.output().unwrap().stdout).unwrap())
    };
    assert!(help(false).0.contains("--ssl-key-file"));
    assert!(!help(true).0.contains("--ssl-key-file"));
}
