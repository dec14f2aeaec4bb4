//! A server's environment is provision's own less what would change the server outside its plan
//! or hand it another pool's secret: variables the engine reads as settings (`LLAMA_ARG_*`,
//! `LLAMA_API_KEY`, `HF_TOKEN`) and variables whose names mark secrets are not inherited unless
//! the pool sets them; everything else is (PATH, LD_LIBRARY_PATH, …).
//!
//! The llama-server is this test binary, run as the fake llama-server. Hence `harness = false`.

#[path = "../../steps-spawn/src/bin/fake-llama-server.rs"]
mod fake;
mod gpu_host;

use std::process::ExitCode;

use gpu_host::{gpu_pool, provision, AS_SERVER};
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;

fn main() -> ExitCode {
    if std::env::var_os(AS_SERVER).is_some() {
        fake::main();
        return ExitCode::SUCCESS;
    }
    let args = Arguments::from_args();
    let tests = vec![Trial::test(
        "settings_and_secrets_of_provisions_environment_do_not_reach_the_server",
        settings_and_secrets,
    )];
    libtest_mimic::run(&args, tests).exit_code()
}

/// The environment of process `pid`, as `NAME=value` entries.
fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect()
}

fn settings_and_secrets() -> Result<(), Failed> {
    let dir = gpu_host::project();
    let own_env = "    api_key: {env: CHAT_API_KEY}\n";
    let pools = format!(
        "pools:\n{}",
        gpu_pool("g", 1, "[0]", own_env).replace(
            "FAKE_GPUS: \"8\"}",
            "FAKE_GPUS: \"8\", POOL_OWN_TOKEN: \"mine\"}"
        )
    );
    std::fs::write(dir.path().join("pools.yaml"), pools).unwrap();
    let out = provision(
        dir.path(),
        &["apply", "-c", "pools.yaml", "--cache-dir", "cache"],
    )
    .env("LLAMA_ARG_N_GPU_LAYERS", "0")
    .env("LLAMA_ARG_CTX_SIZE", "99")
    .env("HF_TOKEN", "hf_from_the_shell")
    .env("OTHER_POOL_API_KEY", "someone-elses-key")
    .env("CHAT_API_KEY", "the-pools-key")
    .env("PLAIN_SETTING", "kept")
    .output()
    .unwrap();
    let _down = Down(dir.path().to_path_buf());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let handoff: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(".runtime/engines/llamacpp.json")).unwrap(),
    )
    .unwrap();
    let env = environ(handoff["pid"].as_u64().unwrap() as u32);
    let has = |e: &str| env.iter().any(|x| x == e);
    let named = |n: &str| env.iter().any(|x| x.starts_with(&format!("{n}=")));
    for gone in [
        "LLAMA_ARG_N_GPU_LAYERS",
        "LLAMA_ARG_CTX_SIZE",
        "HF_TOKEN",
        "OTHER_POOL_API_KEY",
        "CHAT_API_KEY",
    ] {
        assert!(!named(gone), "{gone} reached the server: {env:?}");
    }
    assert!(
        has("LLAMA_API_KEY=the-pools-key"),
        "the pool's own key, as the server reads it"
    );
    assert!(has("POOL_OWN_TOKEN=mine"), "the pool's own env");
    assert!(has("PLAIN_SETTING=kept"), "the rest is inherited");
    assert!(named("PATH"));
    Ok(())
}

/// Takes the project's servers down when the test ends, even when it failed.
struct Down(std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = provision(&self.0, &["down", "--grace", "0.2"]).output();
    }
}
