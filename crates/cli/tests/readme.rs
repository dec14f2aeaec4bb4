//! The README says exactly what the binary does: every `provision` command line in its code
//! blocks uses flags that `provision <command> --help` lists, the usage lines of each command
//! together list every flag it has, its exit-code table is the one `--help` prints, and every
//! `cargo xtask` task it names exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).expect("README.md")
}

/// The lines of every fenced code block, with continuation lines (indented, starting with `[`)
/// joined to the line they continue.
fn code_lines(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
            continue;
        }
        if !inside {
            continue;
        }
        let trimmed = line.trim();
        match out.last_mut() {
            Some(last) if trimmed.starts_with('[') && line.starts_with(' ') => {
                last.push(' ');
                last.push_str(trimmed);
            }
            _ => out.push(trimmed.to_string()),
        }
    }
    out
}

/// The subcommands the binary has (`plan`, `export kubernetes`, …).
const COMMANDS: &[&str] = &[
    "export kubernetes",
    "plan",
    "apply",
    "status",
    "down",
    "supervise",
    "inspect",
    "validate",
];

/// `provision <command> …` lines of the README's code blocks, by command.
fn usage_lines(text: &str) -> BTreeMap<&'static str, Vec<String>> {
    let mut out: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for line in code_lines(text) {
        let Some(rest) = line.strip_prefix("provision ") else {
            continue;
        };
        if let Some(cmd) = COMMANDS.iter().find(|c| {
            rest.strip_prefix(**c)
                .is_some_and(|r| r.is_empty() || r.starts_with(' '))
        }) {
            out.entry(cmd)
                .or_default()
                .push(rest[cmd.len()..].to_string());
        }
    }
    out
}

/// `--long` flags and `-s` short flags named in a text.
fn flags(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut long = BTreeSet::new();
    let mut short = BTreeSet::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
        if let Some(name) = word.strip_prefix("--") {
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                long.insert(format!("--{name}"));
            }
        } else if let Some(name) = word.strip_prefix('-') {
            if name.len() == 1 && name.chars().all(|c| c.is_ascii_alphabetic()) {
                short.insert(format!("-{name}"));
            }
        }
    }
    (long, short)
}

fn help(cmd: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(cmd.split(' '))
        .arg("--help")
        .output()
        .expect("provision runs");
    assert!(out.status.success(), "provision {cmd} --help failed");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// The options of `--help` (not the text of their descriptions): each long flag with its
/// short spelling, if any.
fn help_options(cmd: &str) -> BTreeMap<String, Option<String>> {
    let text = help(cmd);
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        let head = line.split("  ").next().unwrap_or_default();
        let (long, short) = flags(head);
        for l in long {
            out.insert(l, short.iter().next().cloned());
        }
    }
    out.remove("--help");
    out
}

/// The long and the short flags of `--help`.
fn help_flags(cmd: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let options = help_options(cmd);
    let short = options.values().flatten().cloned().collect();
    (options.into_keys().collect(), short)
}

#[test]
fn every_command_line_in_the_readme_matches_its_help() {
    let text = readme();
    let lines = usage_lines(&text);
    let mut problems = Vec::new();
    for cmd in COMMANDS {
        let Some(cmd_lines) = lines.get(cmd) else {
            problems.push(format!("`provision {cmd}` has no usage line in README.md"));
            continue;
        };
        let options = help_options(cmd);
        let (help_long, help_short) = help_flags(cmd);
        let mut listed = BTreeSet::new();
        for line in cmd_lines {
            let (long, short) = flags(line);
            for f in long.difference(&help_long) {
                problems.push(format!(
                    "README: `provision {cmd}` shows {f}, which `provision {cmd} --help` does not list"
                ));
            }
            for f in short.difference(&help_short) {
                problems.push(format!(
                    "README: `provision {cmd}` shows {f}, which `provision {cmd} --help` does not list"
                ));
            }
            listed.extend(long);
            // A flag shown by its short spelling only (`-v|-vv|-q`) is listed too.
            listed.extend(
                options
                    .iter()
                    .filter(|(_, s)| s.as_ref().is_some_and(|s| short.contains(s)))
                    .map(|(l, _)| l.clone()),
            );
        }
        for f in help_long.difference(&listed) {
            problems.push(format!(
                "README: no usage line of `provision {cmd}` shows {f} (in `provision {cmd} --help`)"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `| 3 | … |` rows of the README's exit-code table.
fn readme_exit_codes(text: &str) -> BTreeSet<u32> {
    let start = text.find("### Exit codes").expect("an exit-code section");
    text[start..]
        .lines()
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.trim_matches('|').split('|').next()?.trim().parse().ok())
        .collect()
}

#[test]
fn the_exit_code_table_is_the_one_help_prints() {
    let text = help("plan");
    let start = text.find("Exit codes:").expect("--help lists exit codes");
    let from_help: BTreeSet<u32> = text[start..]
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(from_help.contains(&130), "{from_help:?}");
    assert_eq!(readme_exit_codes(&readme()), from_help);
}

#[test]
fn every_xtask_task_the_readme_names_exists() {
    let xtask = std::fs::read_to_string(repo().join("xtask/src/main.rs")).expect("xtask main");
    let text = readme();
    let tasks: BTreeSet<&str> = text
        .split("cargo xtask ")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
        })
        .filter(|t| !t.is_empty())
        .collect();
    assert!(tasks.contains("e2e") && tasks.contains("test"), "{tasks:?}");
    for task in tasks {
        assert!(
            xtask.contains(&format!("Some(\"{task}\")")),
            "README names `cargo xtask {task}`, which xtask/src/main.rs does not dispatch"
        );
    }
}

#[test]
fn the_checker_sees_a_flag_the_binary_lacks() {
    let (long, short) = flags("provision apply --config FILE [--jobs N] [-v|-vv|-q] [--bogus]");
    assert!(
        long.contains("--bogus") && long.contains("--jobs"),
        "{long:?}"
    );
    assert!(short.contains("-v") && short.contains("-q"), "{short:?}");
    let (help_long, _) = help_flags("apply");
    assert!(!help_long.contains("--bogus") && help_long.contains("--jobs"));
    let lines = usage_lines("```\nprovision down [--grace SECS]\n    [--json]\n```\n");
    assert_eq!(lines["down"], vec![" [--grace SECS] [--json]".to_string()]);
}
