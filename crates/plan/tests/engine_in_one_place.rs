//! The engine seam (issue 14 item 4): what is llama.cpp's (`llama-server`, its endpoints
//! `/health`, `/props`, `/metrics`, `/v1/models`, its `--help` and `--version`, its
//! `LLAMA_API_KEY`) is spelled only in the engine modules (crates/plan/src/engine/ for the
//! planner, crates/steps-spawn/src/engine/ at runtime), never in the executor, in the spawn of
//! a local server, or in what follows a server (probe, handoff, down, status, supervise, the
//! server handle). And only
//! those modules dispatch on the `Engine` enum. Comments and test code may name anything.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn crates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The code lines of `file` (before `#[cfg(test)]`, comment lines left out), numbered.
fn code_lines(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).expect("readable source");
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(n, l)| (n + 1, l.to_string()))
        .collect()
}

/// What only an engine module may spell.
const ENGINE_NAMES: &[&str] = &[
    "llama-server",
    "llamacpp",
    "llama.cpp",
    "/health",
    "/props",
    "/metrics",
    "/v1/models",
    "--help",
    "--version",
    "--metrics",
    "LLAMA_",
    "parse_help",
    "Engine::",
    "\"--model",
    "\"--host",
    "\"--port",
];

/// The files that follow a server without knowing its engine.
fn engine_free_files() -> Vec<PathBuf> {
    let root = crates();
    let mut files = Vec::new();
    sources(&root.join("executor/src"), &mut files);
    for f in [
        "steps-spawn/src/spawn.rs",
        "steps-spawn/src/probe.rs",
        "steps-spawn/src/handoff.rs",
        "steps-spawn/src/down.rs",
        "steps-spawn/src/supervise.rs",
        "steps-spawn/src/status_report.rs",
        "steps-spawn/src/server_handle.rs",
        "steps-spawn/src/http.rs",
        "cli/src/cmd/status.rs",
        "cli/src/cmd/down.rs",
        "cli/src/cmd/supervise.rs",
        "cli/src/session.rs",
        "cli/src/handoff_paths.rs",
    ] {
        let path = root.join(f);
        assert!(
            path.is_file(),
            "{} is gone: update this test",
            path.display()
        );
        files.push(path);
    }
    files
}

fn found_in(files: &[PathBuf], names: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        for (n, line) in code_lines(file) {
            for name in names {
                if line.contains(name) {
                    found.push(format!("{}:{n}: `{name}`: {}", file.display(), line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn no_engine_is_named_outside_the_engine_modules() {
    let files = engine_free_files();
    assert!(files.len() > 20, "found the sources: {files:?}");
    let found = found_in(&files, ENGINE_NAMES);
    assert!(
        found.is_empty(),
        "an engine's names belong in crates/plan/src/engine/ or crates/steps-spawn/src/engine/ \
         (ask `engine::of(spec.engine)`, or the `ServerHandle`):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_an_engine_name() {
    // The check reads code, not comments: a file that spelled an endpoint would be caught.
    let dir = std::env::temp_dir().join(format!("engine-guard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("probe.rs");
    std::fs::write(
        &file,
        "// asks `/metrics`\nfn f() { get(\"/metrics\"); }\n#[cfg(test)]\nfn t() { \"/health\"; }\n",
    )
    .unwrap();
    let found = found_in(std::slice::from_ref(&file), ENGINE_NAMES);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains(":2: `/metrics`"), "{found:?}");
}

#[test]
fn only_the_engine_modules_dispatch_on_the_engine() {
    let root = crates();
    let mut files = Vec::new();
    for krate in std::fs::read_dir(&root).expect("crates dir") {
        let src = krate.expect("entry").path().join("src");
        if src.is_dir() {
            sources(&src, &mut files);
        }
    }
    files.retain(|f| {
        let f = f.to_string_lossy();
        !f.contains("plan/src/engine/")
            && !f.contains("steps-spawn/src/engine/")
            && !f.ends_with("plan/src/config.rs")
    });
    assert!(files.len() > 50, "found the sources: {files:?}");
    let variants = [
        "Engine::Llamacpp",
        "Engine::Vllm",
        "Engine::Tgi",
        "Engine::Triton",
    ];
    let found = found_in(&files, &variants);
    assert!(
        found.is_empty(),
        "dispatch on `Engine` in `engine::of` (plan: planner and validation; steps-spawn: \
         runtime) only:\n{}",
        found.join("\n")
    );
}
