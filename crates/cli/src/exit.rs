//! Exit codes: the one table from why a command ends to its code, documented in the README's
//! "Exit codes" table and in `--help` (both generated from, or checked against, [`Exit::ALL`]).
//! Every command ends through an [`Exit`]; the errors that decide one ([`StateError`],
//! [`LockError`], [`ConfigError`](provision_plan::ConfigError)) map to it here and nowhere else.

use std::process::ExitCode;

use provision_executor::{LockError, StateError};

/// Why a command ends. Each kind has exactly one code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    /// An I/O error or an internal error.
    Unexpected,
    /// An invalid config or command line (or a `--pool`, model ref, state selection that names
    /// nothing): nothing was changed.
    Invalid,
    /// `apply`: a step failed.
    StepFailed,
    /// The state file is unreadable, newer, or its `.lock` is not provision's.
    StateUnusable,
    /// Another provision holds the lock, or the lock file was removed under this one.
    Locked,
    /// Ctrl-C or SIGTERM during an apply.
    Interrupted,
    /// `plan --detailed-exitcode`: something would run.
    Changes,
}

impl Exit {
    /// The kinds of the README's exit-code table (`plan --detailed-exitcode`'s [`Exit::Changes`]
    /// is the line under it).
    pub const TABLE: [Exit; 7] = [
        Exit::Ok,
        Exit::Unexpected,
        Exit::Invalid,
        Exit::StepFailed,
        Exit::StateUnusable,
        Exit::Locked,
        Exit::Interrupted,
    ];

    pub const fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Unexpected => 1,
            Exit::Invalid => 2,
            Exit::StepFailed => 3,
            Exit::StateUnusable => 4,
            Exit::Locked => 5,
            Exit::Interrupted => 130,
            Exit::Changes => 2,
        }
    }

    /// What `--help` says of the code.
    const fn help(self) -> &'static str {
        match self {
            Exit::Ok => "success (apply: every step passed or was fresh)",
            Exit::Unexpected => "unexpected failure (I/O error, internal error)",
            Exit::Invalid => "invalid config or command line; nothing was changed",
            Exit::StepFailed => {
                "apply: a step failed (its dependents did not run; the rest finished)"
            }
            Exit::StateUnusable => {
                "the state file is unreadable or from a newer provision, or its .lock is not provision's"
            }
            Exit::Locked => {
                "another apply holds the lock on the state file, or the lock file was removed under this one"
            }
            Exit::Interrupted => {
                "apply, or supervise during its first apply, was interrupted (Ctrl-C, SIGTERM); state was written"
            }
            Exit::Changes => "something would run",
        }
    }

    /// A state file that could not be used: not written (1), its lock lost (5), or
    /// unreadable (4).
    pub fn of_state(err: &StateError) -> Exit {
        match err {
            StateError::Io {
                action: "write", ..
            } => Exit::Unexpected,
            StateError::LockLost(_) => Exit::Locked,
            StateError::Corrupt { .. } | StateError::TooNew { .. } | StateError::Io { .. } => {
                Exit::StateUnusable
            }
        }
    }

    /// A lock that could not be taken or was lost: another holder or a lost lock file (5), a
    /// lock file that is not provision's (4, like any state that cannot be used), I/O (1).
    pub fn of_lock(err: &LockError) -> Exit {
        match err {
            LockError::Held { .. } | LockError::Lost { .. } => Exit::Locked,
            LockError::NotOurs { .. } => Exit::StateUnusable,
            LockError::Io { .. } => Exit::Unexpected,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// The exit-code part of every command's `--help`, from [`Exit::TABLE`].
pub fn help() -> String {
    let mut text = String::from("Exit codes:\n");
    for exit in Exit::TABLE {
        text.push_str(&format!("  {:<4} {}\n", exit.code(), exit.help()));
    }
    text.push_str(&format!(
        "plan --detailed-exitcode: {} nothing would run, {} {}, {} error",
        Exit::Ok.code(),
        Exit::Changes.code(),
        Exit::Changes.help(),
        Exit::Unexpected.code()
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    /// `| code | meaning |` rows of the README's exit-code table, by code.
    fn readme_table() -> BTreeMap<u8, String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let text = std::fs::read_to_string(path).expect("README.md");
        let start = text.find("### Exit codes").expect("an exit-code section");
        text[start..]
            .lines()
            .skip(1)
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| {
                let mut cells = l.trim_matches('|').split('|');
                let code = cells.next()?.trim().parse().ok()?;
                Some((code, cells.next()?.trim().to_string()))
            })
            .collect()
    }

    /// Words of the README's row that say which kind it is.
    fn documented(exit: Exit) -> &'static str {
        match exit {
            Exit::Ok => "success",
            Exit::Unexpected => "unexpected failure",
            Exit::Invalid => "invalid config or command line",
            Exit::StepFailed => "a step failed",
            Exit::StateUnusable => "state file is unreadable",
            Exit::Locked => "holds the lock",
            Exit::Interrupted => "interrupted",
            Exit::Changes => unreachable!("not in the table"),
        }
    }

    #[test]
    fn every_kind_has_the_code_the_readme_documents() {
        let table = readme_table();
        for exit in Exit::TABLE {
            let row = table
                .get(&exit.code())
                .unwrap_or_else(|| panic!("{exit:?}: no README row for {}", exit.code()));
            assert!(
                row.contains(documented(exit)),
                "{exit:?} is {}: {row}",
                exit.code()
            );
        }
        let codes: Vec<u8> = Exit::TABLE.iter().map(|e| e.code()).collect();
        assert_eq!(
            table.keys().copied().collect::<Vec<_>>(),
            codes,
            "every README row is a kind of the table, in order"
        );
    }

    fn path() -> PathBuf {
        PathBuf::from("/s/state.json")
    }

    #[test]
    fn every_state_and_lock_error_maps_to_the_documented_kind() {
        let io = || std::io::Error::other("x");
        let lock_errors = [
            (
                LockError::Held {
                    path: path(),
                    holder: None,
                    removed: false,
                },
                Exit::Locked,
            ),
            (LockError::Lost { path: path() }, Exit::Locked),
            (
                LockError::NotOurs {
                    path: path(),
                    why: "x".into(),
                },
                Exit::StateUnusable,
            ),
            (
                LockError::Io {
                    path: path(),
                    source: io(),
                },
                Exit::Unexpected,
            ),
        ];
        for (err, exit) in &lock_errors {
            assert_eq!(Exit::of_lock(err), *exit, "{err}");
        }
        let state_errors = [
            (
                StateError::Corrupt {
                    path: path(),
                    detail: "x".into(),
                },
                Exit::StateUnusable,
            ),
            (
                StateError::TooNew {
                    path: path(),
                    found: 99,
                },
                Exit::StateUnusable,
            ),
            (
                StateError::Io {
                    action: "read",
                    path: path(),
                    source: io(),
                },
                Exit::StateUnusable,
            ),
            (
                StateError::Io {
                    action: "write",
                    path: path(),
                    source: io(),
                },
                Exit::Unexpected,
            ),
            (
                StateError::LockLost(LockError::Lost { path: path() }),
                Exit::Locked,
            ),
        ];
        for (err, exit) in &state_errors {
            assert_eq!(Exit::of_state(err), *exit, "{err}");
        }
        // Each kind's code is the README's.
        let table = readme_table();
        let kinds = lock_errors.iter().map(|(_, x)| *x);
        for exit in kinds.chain(state_errors.iter().map(|(_, x)| *x)) {
            assert!(table[&exit.code()].contains(documented(exit)));
        }
    }

    #[test]
    fn help_lists_every_kind_of_the_table() {
        let help = help();
        for exit in Exit::TABLE {
            assert!(
                help.contains(&format!("  {:<4} {}", exit.code(), exit.help())),
                "{help}"
            );
        }
        assert!(help.ends_with(
            "plan --detailed-exitcode: 0 nothing would run, 2 something would run, 1 error"
        ));
    }
}
