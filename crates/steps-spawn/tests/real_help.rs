//! The flag check against the `--help` of a real llama-server (llama.cpp 0.5.0-dev, build 1,
//! captured in tests/data): every flag the planner emits is known, renamed or misspelt ones are
//! not, and deprecated spellings the binary still lists (`--no-webui`) pass.

use provision_steps_spawn::engine::llamacpp::parse_version;
use provision_steps_spawn::engine::llamacpp_help::{parse_help, UnknownFlag};

const HELP: &str = include_str!("data/llama-server-help.txt");

fn argv(flags: &[&str]) -> Vec<String> {
    std::iter::once("llama-server")
        .chain(flags.iter().copied())
        .map(String::from)
        .collect()
}

#[test]
fn what_the_planner_emits_is_accepted_by_a_real_build() {
    let known = parse_help(HELP);
    assert!(known.0.len() > 300, "{} flags", known.0.len());
    let planned = argv(&[
        "--host",
        "127.0.0.1",
        "--port",
        "8080",
        "--model",
        "/m.gguf",
        "--threads",
        "2",
        "--n-gpu-layers",
        "0",
        "--parallel",
        "1",
        "--no-cont-batching",
        "--metrics",
        "--no-webui",
        "--ctx-size",
        "512",
        "--tensor-split",
        "3,1",
        "--api-key",
        "<redacted>",
        "-ngl",
        "99",
        "-c",
        "128",
        "--no-ui",
        "-cb",
        "-fit",
        "off",
    ]);
    assert_eq!(known.unknown(&planned), vec![]);
}

#[test]
fn misspelt_and_removed_flags_are_caught_with_the_nearest_spelling() {
    let known = parse_help(HELP);
    let got = known.unknown(&argv(&[
        "--n-gpu-layer",
        "9",
        "--paralel",
        "2",
        "--bogus-flag",
    ]));
    assert_eq!(
        got,
        vec![
            UnknownFlag {
                flag: "--n-gpu-layer".into(),
                suggestion: Some("--n-gpu-layers".into())
            },
            UnknownFlag {
                flag: "--paralel".into(),
                suggestion: Some("--parallel".into())
            },
            UnknownFlag {
                flag: "--bogus-flag".into(),
                suggestion: None
            },
        ]
    );
}

#[test]
fn the_real_version_line_parses() {
    assert_eq!(
        parse_version(
            "version: 0.5.0-dev (build 1, commit 322c79a)\nbuilt with GNU 12.2.0 for Linux x86_64"
        )
        .as_deref(),
        Some("b1-322c79a")
    );
}
