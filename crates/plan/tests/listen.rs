//! `listen.host` per pool: 127.0.0.1 by default; any other address needs an API key given by
//! reference; the key never reaches the plan, the argv or the handoff (which says only that
//! the URL needs a bearer token).

use provision_plan::{Document, Plan, PlanOptions, Roots, StepSpec};

fn config(pool_extra: &str) -> String {
    format!(
        "pools:
  - id: web
    engine: llamacpp
    model: tiny
    backend: cpu
    devices: []
{pool_extra}    provisioning:
      mode: binary
      binary: {{path: /opt/llama-server}}
      model: {{ref: /models/tiny.gguf}}
      ports: [9001]
"
    )
}

fn errors_of(yaml: &str) -> String {
    let doc = Document::parse("listen.yaml", yaml.to_string()).unwrap();
    match provision_plan::validate(&doc) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

fn plan_of(yaml: &str) -> Plan {
    let doc = Document::parse("listen.yaml", yaml.to_string()).unwrap();
    let valid = provision_plan::validate(&doc).unwrap_or_else(|e| panic!("{e}"));
    let roots = Roots {
        cache: "/cache".into(),
        runtime: "/run/p".into(),
        config_dir: "/config".into(),
    };
    provision_plan::plan(&valid, &PlanOptions { roots, pool: None }).unwrap()
}

#[test]
fn a_non_loopback_bind_without_an_api_key_is_refused() {
    let err = errors_of(&config("    listen: {host: 0.0.0.0}\n"));
    assert!(
        err.contains("pools[0].listen.host")
            && err.contains(
                "would listen on 0.0.0.0, reachable from other hosts, without an API key"
            )
            && err.contains("api_key: {env: NAME}"),
        "{err}"
    );
    // A key in `flags` is not a key by reference.
    let err = errors_of(&config("    listen: {host: 10.0.0.5}\n").replace(
        "ports: [9001]",
        "ports: [9001]\n      flags: [--api-key, inline]",
    ));
    assert!(err.contains("without an API key"), "{err}");
    let err = errors_of(&config("    listen: {host: my-host.example}\n"));
    assert!(
        err.contains("`my-host.example` is not an IP address"),
        "{err}"
    );
    // Loopback needs nothing.
    assert_eq!(errors_of(&config("    listen: {host: 127.0.0.1}\n")), "");
}

#[test]
fn a_key_by_reference_allows_it_and_stays_a_reference() {
    let yaml = config("    listen: {host: 0.0.0.0}\n    api_key: {file: keys/web.key}\n");
    assert_eq!(errors_of(&yaml), "");
    let plan = plan_of(&yaml);
    let json = plan.to_json();
    for s in &plan.steps {
        match &s.spec {
            StepSpec::Spawn(sp) => {
                assert_eq!(sp.host, "0.0.0.0");
                assert!(sp.argv.join(" ").contains("--host 0.0.0.0 --port 9001"));
                assert!(!sp.argv.iter().any(|a| a.contains("api-key")));
                assert_eq!(
                    sp.api_key,
                    Some(provision_plan::config::SecretRef::File(
                        "${config_dir}/keys/web.key".into()
                    ))
                );
            }
            StepSpec::Probe(p) => assert_eq!(p.url, "http://127.0.0.1:9001"),
            StepSpec::Handoff(h) => assert_eq!(h.auth.as_deref(), Some("bearer")),
            _ => {}
        }
    }
    assert!(json.contains("\"auth\": \"bearer\""), "{json}");
}

#[test]
fn the_default_is_loopback_without_auth() {
    let plan = plan_of(&config(""));
    for s in &plan.steps {
        match &s.spec {
            StepSpec::Spawn(sp) => assert_eq!(sp.host, "127.0.0.1"),
            StepSpec::Handoff(h) => assert_eq!(h.auth, None),
            _ => {}
        }
    }
}

#[test]
fn both_a_reference_and_an_inline_key_are_refused() {
    let err = errors_of(&config("    api_key: {env: K}\n").replace(
        "ports: [9001]",
        "ports: [9001]\n      flags: [--api-key, inline]",
    ));
    assert!(err.contains("both `api_key` and `--api-key`"), "{err}");
}

#[test]
fn tls_needs_both_files_and_they_pass_through() {
    let err = errors_of(&config("    listen: {tls: {cert_file: web.crt}}\n"));
    assert!(
        err.contains("pools[0].listen.tls.key_file")
            && err.contains("needs both `cert_file` and `key_file`: `key_file` is missing"),
        "{err}"
    );
    let err = errors_of(&config(
        "    listen: {tls: {cert_file: \" \", key_file: web.key}}\n",
    ));
    assert!(err.contains("`listen.tls.cert_file` is empty"), "{err}");

    let yaml = config("    listen: {tls: {cert_file: tls/web.crt, key_file: /etc/web.key}}\n");
    assert_eq!(errors_of(&yaml), "");
    let plan = plan_of(&yaml);
    let mut seen = 0;
    for s in &plan.steps {
        match &s.spec {
            StepSpec::Spawn(sp) => {
                seen += 1;
                let argv = sp.argv.join(" ");
                assert!(
                    argv.contains(
                        "--ssl-cert-file ${config_dir}/tls/web.crt --ssl-key-file /etc/web.key"
                    ),
                    "{argv}"
                );
                let tls = sp.tls.as_ref().expect("spawn knows its TLS files");
                assert_eq!(tls.key_file, "/etc/web.key");
            }
            StepSpec::Probe(p) => {
                seen += 1;
                assert_eq!(p.url, "https://127.0.0.1:9001");
                assert_eq!(p.pinned_cert.as_deref(), Some("${config_dir}/tls/web.crt"));
            }
            StepSpec::Handoff(h) => {
                seen += 1;
                assert_eq!(h.url, "https://127.0.0.1:9001");
            }
            _ => {}
        }
    }
    assert_eq!(seen, 3);
}

#[test]
fn tls_files_are_in_the_spawn_spec_so_changing_them_restarts() {
    let spec = |cert: &str| {
        let plan = plan_of(&config(&format!(
            "    listen: {{tls: {{cert_file: {cert}, key_file: web.key}}}}\n"
        )));
        plan.steps
            .iter()
            .find(|s| s.id.starts_with("spawn:"))
            .map(|s| serde_json::to_string(&s.spec).unwrap())
            .unwrap()
    };
    assert_ne!(spec("a.crt"), spec("b.crt"));
}

#[test]
fn ssl_flags_belong_to_listen_tls() {
    for flags in [
        "[--ssl-key-file, /k.pem]",
        "[--ssl-cert-file=/c.pem]",
        "[\"--ssl-key-file=/k.pem\"]",
    ] {
        let err = errors_of(&config("").replace(
            "ports: [9001]",
            &format!("ports: [9001]\n      flags: {flags}"),
        ));
        assert!(
            err.contains("is set by provision and may not be given in `flags`")
                && err.contains("listen: {tls: {cert_file: PATH, key_file: PATH}}"),
            "{flags}: {err}"
        );
    }
}

#[test]
fn advertise_names_the_handoff_host_and_probes_still_dial_the_bind() {
    let yaml =
        config("    listen: {host: 0.0.0.0, advertise: gpu1.example.com}\n    api_key: {env: K}\n");
    assert_eq!(errors_of(&yaml), "");
    let plan = plan_of(&yaml);
    for s in &plan.steps {
        match &s.spec {
            StepSpec::Probe(p) => assert_eq!(p.url, "http://127.0.0.1:9001"),
            StepSpec::Handoff(h) => {
                assert_eq!(h.advertise.as_deref(), Some("gpu1.example.com"));
                assert_eq!(h.url, "http://gpu1.example.com:9001");
            }
            _ => {}
        }
    }
    let err = errors_of(&config(
        "    listen: {host: 0.0.0.0, advertise: \"http://gpu1:80\"}\n    api_key: {env: K}\n",
    ));
    assert!(
        err.contains("pools[0].listen.advertise")
            && err.contains("is neither a host name nor an IP address"),
        "{err}"
    );
    let err = errors_of(&config("    listen: {advertise: 0.0.0.0}\n"));
    assert!(err.contains("is a wildcard address"), "{err}");
}
