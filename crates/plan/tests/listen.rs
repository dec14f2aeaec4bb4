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
