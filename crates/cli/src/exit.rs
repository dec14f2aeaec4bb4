//! Exit codes. Documented in the README and in `--help`.

pub const OK: u8 = 0;
pub const FAILURE: u8 = 1;
pub const INVALID_CONFIG: u8 = 2;
pub const STEP_FAILED: u8 = 3;
pub const STATE_UNREADABLE: u8 = 4;
pub const LOCKED: u8 = 5;
pub const INTERRUPTED: u8 = 130;
/// `plan --detailed-exitcode`: something would run.
pub const CHANGES: u8 = 2;

pub const EXIT_CODES: &str = "Exit codes:
  0    success (apply: every step passed or was fresh)
  1    unexpected failure (I/O error, internal error)
  2    invalid config or command line; nothing was changed
  3    apply: a step failed (its dependents did not run; the rest finished)
  4    the state file is unreadable or from a newer provision, or its .lock is not provision's
  5    another apply holds the lock on the state file, or the lock file was removed under this one
  130  apply, or supervise during its first apply, was interrupted (Ctrl-C, SIGTERM); state was written
plan --detailed-exitcode: 0 nothing would run, 2 something would run, 1 error";
