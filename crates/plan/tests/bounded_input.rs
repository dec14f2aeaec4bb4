//! Bounded input: a config cannot make provision read forever, recurse without end, expand
//! without end, or print without end. Each test names the limit it checks (see README,
//! "Safety and security"). Large inputs are generated here, not committed.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use provision_plan::{ConfigError, Document, PlanOptions, Roots};

/// A pool that validates, with `extra` lines under `provisioning:` and `fields` under the pool.
fn pool(i: usize, fields: &str, extra: &str) -> String {
    format!(
        "  - id: p{i}\n    engine: llamacpp\n    model: m.gguf\n    devices: []\n    \
         backend: cpu\n{fields}    provisioning:\n      mode: binary\n      \
         binary: {{path: /opt/llama-server}}\n{extra}"
    )
}

fn parse(text: String) -> Result<provision_plan::ValidConfig, ConfigError> {
    let doc = Document::parse("c.yaml", text)?;
    provision_plan::validate(&doc)
}

fn reject(text: String) -> ConfigError {
    match parse(text) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    }
}

/// Run `f` on another thread; fail (rather than hang) when it takes longer than a minute.
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("still running after a minute: the input is not bounded")
}

fn load_err(path: PathBuf) -> String {
    within_a_minute(move || match provision_plan::load(&path) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => e.to_string(),
    })
}

#[test]
fn a_fifo_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("c.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let err = load_err(fifo.clone());
    assert!(err.contains("not a regular file"), "{err}");
    assert!(err.contains(&fifo.display().to_string()), "{err}");
}

#[test]
fn devices_and_directories_are_refused() {
    for path in ["/dev/zero", "/dev/null"] {
        let err = load_err(PathBuf::from(path));
        assert!(err.contains("not a regular file"), "{path}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let err = load_err(dir.path().to_path_buf());
    assert!(err.contains("a directory"), "{err}");
}

#[test]
fn a_file_over_the_size_cap_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    // Sparse: 1 GiB of nothing on disk.
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let err = load_err(big);
    assert!(err.contains("16 MiB"), "{err}");
    // Just over the cap: still refused.
    let over = dir.path().join("over.yaml");
    let mut text = "pools: []\n".to_string();
    text.push_str(&"#".repeat(provision_plan::document::MAX_CONFIG_BYTES + 1 - text.len()));
    std::fs::write(&over, text).unwrap();
    let err = load_err(over);
    assert!(err.contains("16 MiB"), "{err}");
}

#[test]
fn a_config_that_is_not_utf8_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, b"pools: [\xff]\n").unwrap();
    let err = load_err(path);
    assert!(err.contains("UTF-8"), "{err}");
}

#[test]
fn deep_nesting_fails_cleanly_without_overflowing_the_stack() {
    let n = 20_000;
    let cases = [
        format!("pools:\n{}x\n", "- ".repeat(n)),
        format!("{}{}", "[".repeat(n), "]".repeat(n)),
        format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n)),
        format!("{}1{}", "{a: ".repeat(n), "}".repeat(n)),
        format!(
            "a:\n{}",
            (1..300)
                .map(|i| format!("{:i$}b:\n", ""))
                .collect::<String>()
        ),
    ];
    for text in cases {
        let head: String = text.chars().take(20).collect();
        let err = within_a_minute(move || reject(text).to_string());
        assert!(
            err.contains("nested more than 64 levels deep"),
            "{head}: {err}"
        );
    }
    // 64 levels are fine as far as nesting goes (the schema then rejects the shape).
    let ok = format!("x: {}1{}\npools: []\n", "[".repeat(63), "]".repeat(63));
    let err = reject(ok).to_string();
    assert!(!err.contains("nested more than"), "{err}");
}

/// The YAML parser gives the first events of a flow collection that could be a mapping key (a
/// JSON document, `key: [ … ]`) before it has read far past the collection's start: an
/// implicit key is at most 1024 characters. It once read the whole collection ahead, holding
/// ~160 bytes per token (a 16 MiB JSON config of unknown fields: 1.3 GB before its first event).
#[test]
fn flow_collections_are_read_as_a_stream() {
    use std::cell::Cell;
    use std::rc::Rc;

    let items = "1,".repeat(200_000);
    let fields: String = (0..50_000).map(|i| format!("\"u{i}\":1,")).collect();
    for text in [
        format!("[{items}1]\n"),
        format!("{{{fields}\"x\":1}}\n"),
        format!("pools: [{items}1]\n"),
        format!("pools:\n  - {{{fields}x: 1}}\n"),
    ] {
        let read = Rc::new(Cell::new(0usize));
        let counter = Rc::clone(&read);
        let chars = text
            .chars()
            .inspect(move |_| counter.set(counter.get() + 1));
        let mut parser = saphyr_parser::Parser::new_from_iter(chars);
        loop {
            let (event, _) = parser.next_event().expect("an event").expect("no error");
            if matches!(event, saphyr_parser::Event::Scalar(..)) {
                break;
            }
        }
        let head: String = text.chars().take(12).collect();
        assert!(
            read.get() < 16 * 1024,
            "`{head}…`: {} of {} characters read before the first scalar",
            read.get(),
            text.len()
        );
    }
}

#[test]
fn values_per_document_are_capped() {
    let limit = 2_000_000;
    // The root mapping, its key `x`, the list and its items: one past the limit.
    let text = format!("x: [{}1]\npools: []\n", "1,".repeat(limit - 3));
    let err = within_a_minute(move || reject(text));
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    let d = &err.diagnostics[0];
    assert!(
        d.message.contains("more than 2000000 values"),
        "{}",
        d.message
    );
    assert_eq!(d.location.map(|l| l.line), Some(1), "{d:?}");
}

#[test]
fn alias_expansion_is_capped() {
    // A billion laughs, and a large anchor aliased many times.
    let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        laughs.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    laughs.push_str("pools: *a9\n");
    let mut wide = String::from("base: &b [");
    wide.push_str(&vec!["x"; 10_000].join(", "));
    wide.push_str("]\nrefs:\n");
    wide.push_str(&"  - *b\n".repeat(100_000));
    wide.push_str("pools: []\n");
    // Just past the cap: 25 aliases of a list of 10,001 nodes stand for 250,025.
    let aliased = |n: usize| {
        let mut t = String::from("base: &b [");
        t.push_str(&vec!["x"; 10_000].join(", "));
        t.push_str("]\nrefs:\n");
        t.push_str(&"  - *b\n".repeat(n));
        t.push_str("pools: []\n");
        t
    };
    for text in [laughs, wide, aliased(25)] {
        let err = within_a_minute(move || reject(text).to_string());
        assert!(err.contains("aliases"), "{err}");
        assert!(err.contains("250000"), "{err}");
    }
    // Just under it: read (and then refused by the schema, for `base` and `refs`).
    let err = reject(aliased(24)).to_string();
    assert!(!err.contains("aliases of this document"), "{err}");
    // Ordinary use of anchors: a shared section for many pools.
    let mut shared =
        String::from("base: &prov\n  mode: binary\n  binary: {path: /opt/s}\npools:\n");
    for i in 0..100 {
        shared.push_str(&format!(
            "  - {{id: p{i}, engine: llamacpp, model: m, devices: [], backend: cpu, \
             provisioning: *prov}}\n"
        ));
    }
    let err = reject(shared).to_string();
    assert!(err.contains("unknown field `base`"), "{err}");
}

#[test]
fn replicas_per_pool_are_capped() {
    let text = format!("pools:\n{}", pool(0, "    replicas: 1000000000\n", ""));
    let err = within_a_minute(move || reject(text));
    let d = &err.diagnostics[0];
    assert_eq!(d.path, "pools[0].replicas");
    assert!(d.message.contains("between 1 and 256"), "{}", d.message);
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    assert!(parse(format!("pools:\n{}", pool(0, "    replicas: 256\n", ""))).is_ok());
}

#[test]
fn flags_per_pool_are_capped_and_repeats_are_not_quadratic() {
    let flags = vec!["\"--threads\", \"2\""; 50_000].join(", ");
    let text = format!(
        "pools:\n{}",
        pool(0, "", &format!("      flags: [{flags}]\n"))
    );
    let err = within_a_minute(move || reject(text));
    assert!(
        err.diagnostics
            .iter()
            .any(|d| d.path == "pools[0].provisioning.flags" && d.message.contains("at most 1000")),
        "{err}"
    );
    assert!(err.to_string().len() < 20_000, "{}", err.to_string().len());
    // 1,000 flags are allowed: 500 repeats of one flag give warnings, each bounded.
    let flags = vec!["\"--threads\", \"2\""; 500].join(", ");
    let text = format!(
        "pools:\n{}",
        pool(0, "", &format!("      flags: [{flags}]\n"))
    );
    let valid = within_a_minute(move || parse(text).expect("1,000 flags are allowed"));
    assert!(
        valid.render_warnings().len() < 100_000,
        "{}",
        valid.render_warnings().len()
    );
}

#[test]
fn pools_are_capped() {
    let mut text = String::from("pools:\n");
    for i in 0..10_001 {
        text.push_str(&format!(
            "  - {{id: p{i}, engine: llamacpp, model: m, devices: []}}\n"
        ));
    }
    let err = within_a_minute(move || reject(text));
    assert_eq!(err.diagnostics[0].path, "pools");
    assert!(
        err.diagnostics[0].message.contains("at most 10000"),
        "{err}"
    );
}

#[test]
fn diagnostics_are_capped_and_lines_cut() {
    // Minified JSON: one line, 5,000 unknown fields.
    let fields: String = (0..5000).map(|i| format!(",\"u{i}\":1")).collect();
    let text = format!(
        "{{\"pools\":[{{\"id\":\"a\",\"engine\":\"llamacpp\",\"model\":\"m\",\"devices\":[]{fields}}}]}}"
    );
    let err = within_a_minute(move || reject(text));
    assert!(err.diagnostics.len() <= 100, "{}", err.diagnostics.len());
    assert_eq!(err.omitted, 4900);
    let shown = err.to_string();
    assert!(shown.contains("4900 more problems not shown"), "{shown}");
    assert!(
        shown.ends_with("5000 problems in the config; nothing was changed"),
        "{shown}"
    );
    assert!(shown.len() < 100 * 1000, "{}", shown.len());
    // Each excerpt is a window of the line around the problem, the caret under it.
    let last = shown
        .lines()
        .find(|l| l.contains("\"u99\""))
        .expect("an excerpt");
    assert!(last.chars().count() < 300, "{last}");
    assert!(last.contains('…'), "{last}");
}

#[test]
fn a_long_line_is_cut_around_the_column() {
    let value = "v".repeat(100_000);
    let text =
        format!("pools: [{{id: a, engine: llamacpp, model: {value}, devices: [], bogus: 1}}]\n");
    let err = reject(text);
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("unknown field `bogus`"))
        .expect("the problem");
    let (text, carets) = (lines[at + 3], lines[at + 4]);
    assert!(text.chars().count() < 300, "{text}");
    // The caret points at `bogus`.
    let caret = carets.chars().position(|c| c == '^').unwrap();
    let under: String = text.chars().skip(caret).take(5).collect();
    assert_eq!(under, "bogus", "{text}\n{carets}");
}

#[test]
fn nul_bytes_are_rejected_with_the_field_path() {
    let text = format!(
        "pools:\n{}",
        pool(
            0,
            "",
            "      env: {A: \"x\\0y\"}\n      flags: [\"--alias\", \"a\\0b\"]\n"
        )
    );
    let err = reject(text);
    let paths: Vec<&str> = err.diagnostics.iter().map(|d| d.path.as_str()).collect();
    assert!(paths.contains(&"pools[0].provisioning.env.A"), "{err}");
    assert!(paths.contains(&"pools[0].provisioning.flags[1]"), "{err}");
    assert!(err.to_string().contains("NUL"), "{err}");
    let text = format!(
        "pools:\n{}",
        pool(0, "    handoff_path: \"/tmp/h\\0x\"\n", "")
    );
    let err = reject(text);
    assert_eq!(err.diagnostics[0].path, "pools[0].handoff_path", "{err}");
}

#[test]
fn a_tilde_path_is_refused_with_a_hint() {
    for (fields, extra, path) in [
        ("", "", ""),
        ("    handoff_path: ~/h.json\n", "", "pools[0].handoff_path"),
        (
            "",
            "      model: {ref: ~/m.gguf}\n",
            "pools[0].provisioning.model.ref",
        ),
    ] {
        let mut text = format!("pools:\n{}", pool(0, fields, extra));
        let path = if path.is_empty() {
            text = text.replace("/opt/llama-server", "~/llama-server");
            "pools[0].provisioning.binary.path"
        } else {
            path
        };
        let err = reject(text);
        let d = err
            .diagnostics
            .iter()
            .find(|d| d.path == path)
            .unwrap_or_else(|| panic!("{err}"));
        assert!(d.message.contains('~'), "{}", d.message);
        assert!(d.help.as_deref().unwrap_or("").contains("$HOME"), "{d:?}");
    }
}

#[test]
fn plan_text_is_linear_in_the_pools() {
    let mut text = String::from("pools:\n");
    for i in 0..2000 {
        text.push_str(&pool(i, "", ""));
    }
    let valid = parse(text).unwrap();
    let opts = PlanOptions {
        roots: Roots {
            cache: "/c".into(),
            runtime: "/r".into(),
            config_dir: "/e".into(),
        },
        pool: None,
    };
    let plan = provision_plan::plan(&valid, &opts).unwrap();
    let shown = provision_plan::render_text(&plan);
    let json = serde_json::to_string(&plan).unwrap();
    // Each pool's part is a few lines; a list of every other pool per pool was ~30 KB each.
    assert!(shown.len() < 2000 * 2_000, "{}", shown.len());
    assert!(json.len() < 2000 * 5_000, "{}", json.len());
    assert!(
        shown.contains("(shared with 1999 pools (p1, p10, p100, …))"),
        "{}",
        &shown[..3000]
    );
}

#[test]
fn corpus_is_rejected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/adversarial");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "json")
        ) {
            continue;
        }
        n += 1;
        let shown = load_err(path.clone());
        assert!(
            shown.len() < 100_000,
            "{}: {} bytes",
            path.display(),
            shown.len()
        );
    }
    assert!(n >= 8, "fixtures/adversarial has {n} configs");
}

#[test]
fn an_api_key_file_that_is_a_fifo_or_a_device_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("key");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    for path in [fifo.display().to_string(), "/dev/zero".to_string()] {
        let key = provision_plan::secret_ref::SecretRef::File(path.clone());
        let err = within_a_minute(move || key.resolve(|p| p.to_string()))
            .expect_err("a FIFO or a device is no key file");
        assert!(
            err.contains("not a regular file") && err.contains(&path),
            "{err}"
        );
    }
}
