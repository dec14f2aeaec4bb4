//! SIGINT/SIGTERM for the commands that change things (`apply`, `supervise`): the first signal
//! cancels (running steps stop, state is written, replicas are stopped where the command says
//! so); a second one exits at once with 130, for an operator who will not wait. Installed first
//! thing, so a signal never meets the default death.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use provision_executor::Cancel;

use crate::exit::Exit;

/// Whether a signal came, and the token it cancelled.
#[derive(Clone)]
pub(crate) struct Interrupt {
    pub(crate) cancel: Cancel,
    signalled: Arc<AtomicBool>,
}

impl Interrupt {
    /// Install the handler. `saying`: the line on stderr at the first signal, unless `quiet`.
    pub(crate) fn install(quiet: bool, saying: &'static str) -> Interrupt {
        let interrupt = Interrupt {
            cancel: Cancel::new(),
            signalled: Arc::new(AtomicBool::new(false)),
        };
        let handler = interrupt.clone();
        let _ = ctrlc::set_handler(move || {
            if handler.signalled.swap(true, Ordering::SeqCst) {
                std::process::exit(i32::from(Exit::Interrupted.code()));
            }
            if !quiet {
                eprintln!("{saying} (again to exit at once)");
            }
            handler.cancel.cancel();
        });
        interrupt
    }

    /// Whether a signal came.
    pub(crate) fn signalled(&self) -> bool {
        self.signalled.load(Ordering::SeqCst)
    }
}
