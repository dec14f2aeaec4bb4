//! The README says exactly what the binary does: every `provision` command line in its code
//! blocks uses flags that `provision <command> --help` lists, the usage lines of each command
//! together list every flag it has, the command reference has no line that names no command
//! (a `common: …` line would show options to commands that reject them), every flag the prose
//! gives a command (a `provision down -q` span, a flag in `down`'s bullet) is one it takes, its
//! exit-code table is the one `--help` prints, and every `cargo xtask` task it names exists.

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

/// The command reference: the first code block after `## Commands`, one line per command
/// (continuation lines joined).
fn reference_lines(text: &str) -> Vec<String> {
    let start = text.find("## Commands").expect("a Commands section");
    let rest = &text[start..];
    let open = rest.find("```").expect("a code block in Commands");
    let body = &rest[open..];
    let close = body[3..].find("```").expect("a closed code block") + 6;
    code_lines(&body[..close])
}

/// Every line of the command reference is a `provision <command>` line: a line that names no
/// command (`common: --cache-dir --state`) would show options that no command is checked for.
fn reference_problems(text: &str) -> Vec<String> {
    reference_lines(text)
        .iter()
        .filter(|l| !l.is_empty())
        .filter(|line| {
            let rest = line.strip_prefix("provision ").unwrap_or_default();
            !COMMANDS.iter().any(|c| {
                rest.strip_prefix(*c)
                    .is_some_and(|r| r.is_empty() || r.starts_with(' '))
            })
        })
        .map(|line| {
            format!("README: the command reference line `{line}` names no command; give each command its own line with the options it takes")
        })
        .collect()
}

/// Whether `provision <cmd>` takes `flag`: `--help` lists it, or (a hidden alias such as
/// `--json`) the binary parses it.
fn accepts(cmd: &str, flag: &str, listed: &BTreeMap<String, Option<String>>) -> bool {
    if listed.contains_key(flag) || listed.values().flatten().any(|s| s == flag) {
        return true;
    }
    Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(cmd.split(' '))
        .args([flag, "--help"])
        .output()
        .expect("provision runs")
        .status
        .success()
}

/// The inline code spans (`…`) of a text outside its code blocks.
fn inline_spans(text: &str) -> Vec<String> {
    let mut prose = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
        } else if !inside {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.replace('\n', " "))
        .collect()
}

/// The commands section's bullets (`- \`down\` stops …`), by the command they describe.
fn command_bullets(text: &str) -> Vec<(&'static str, String)> {
    let start = text.find("## Commands").expect("a Commands section");
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in text[start..].lines().skip(1) {
        if line.starts_with('#') {
            break;
        }
        if let Some(rest) = line.strip_prefix("- `") {
            current = COMMANDS
                .iter()
                .find(|c| rest.strip_prefix(**c).is_some_and(|r| r.starts_with('`')))
                .map(|c| {
                    out.push((c, String::new()));
                    out.len() - 1
                });
        } else if !line.starts_with("  ") {
            current = None;
        }
        if let Some(i) = current {
            out[i].1.push_str(line);
            out[i].1.push('\n');
        }
    }
    out
}

/// Flags shown in prose: in a `provision <command> …` code span anywhere, or in a code span
/// of a command's bullet in the Commands section. Each must be one that command takes.
fn prose_problems(text: &str) -> Vec<String> {
    let mut shown: Vec<(&'static str, String)> = Vec::new();
    for span in inline_spans(text) {
        if let Some(rest) = span.strip_prefix("provision ") {
            if let Some(cmd) = COMMANDS.iter().find(|c| {
                rest.strip_prefix(**c)
                    .is_some_and(|r| r.is_empty() || r.starts_with(' '))
            }) {
                shown.push((cmd, rest[cmd.len()..].to_string()));
            }
        }
    }
    for (cmd, bullet) in command_bullets(text) {
        for span in inline_spans(&bullet) {
            if span.starts_with('-') {
                shown.push((cmd, span));
            }
        }
    }
    let mut helps: BTreeMap<&str, BTreeMap<String, Option<String>>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (cmd, span) in shown {
        let listed = helps.entry(cmd).or_insert_with(|| help_options(cmd));
        let (long, short) = flags(&span);
        for f in long.iter().chain(&short) {
            if !accepts(cmd, f, listed) {
                problems.push(format!(
                    "README: `{span}` is said of `provision {cmd}`, which does not take {f}"
                ));
            }
        }
    }
    problems
}

#[test]
fn the_command_reference_has_one_line_per_command() {
    let problems = reference_problems(&readme());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_flag_the_prose_gives_a_command_is_one_it_takes() {
    let problems = prose_problems(&readme());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_options_no_command_is_checked_for_and_prose_flags() {
    let text = "## Commands\n\n```\nprovision down      [--config FILE] [-q]\n                    [--grace SECS]\ncommon: --cache-dir --runtime-dir --state\n```\n\n- `down` stops replicas; `--bogus` is shown, `-q` and `--json`\n  are taken. `provision down --cache-dir DIR`\n- `--format` is no command.\n\nSee `provision inspect --jobs N`.\n";
    let reference = reference_problems(text);
    assert_eq!(reference.len(), 1, "{reference:?}");
    assert!(
        reference[0].contains("common: --cache-dir"),
        "{reference:?}"
    );
    let prose = prose_problems(text).join("\n");
    for expected in [
        "does not take --bogus",
        "`provision down`, which does not take --cache-dir",
        "`provision inspect`, which does not take --jobs",
    ] {
        assert!(prose.contains(expected), "{expected}: {prose}");
    }
    assert_eq!(prose.lines().count(), 3, "{prose}");
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
