//! Reporting config, state and lock errors: the message, its hint and the exit code.

use std::process::ExitCode;

use provision_executor::{LockError, StateError};
use provision_plan::ConfigError;

use crate::args::Format;
use crate::exit::Exit;

pub(crate) fn report(err: &ConfigError, format: Format) -> ExitCode {
    match format {
        Format::Text => eprintln!("{err}"),
        Format::Json => {
            let mut body = serde_json::json!({"valid": false, "file": err.file, "diagnostics": err.diagnostics});
            if err.omitted > 0 {
                body["omitted"] = err.omitted.into(); // problems beyond the 100 shown
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&body).expect("serialisable")
            );
        }
    }
    ExitCode::from(Exit::Invalid)
}

pub(crate) fn state_error(err: &StateError) -> ExitCode {
    eprintln!("error: {err}\n  hint: {}", err.hint());
    Exit::of_state(err).into()
}

/// Report a lock that could not be taken; the exit code says why ([`Exit::of_lock`]).
/// `held_hint`: what to do about another holder.
pub(crate) fn lock_error(err: &LockError, held_hint: &str) -> ExitCode {
    let hint = match err {
        LockError::Held { .. } => held_hint.to_string(),
        _ => err.hint(),
    };
    eprintln!("error: {err}\n  hint: {hint}");
    Exit::of_lock(err).into()
}
