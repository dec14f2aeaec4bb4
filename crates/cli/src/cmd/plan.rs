//! `provision plan`: every step `apply` will take, and with a state file which would run.

use std::process::ExitCode;

use clap::Args;
use provision_executor::Preview;

use crate::args::{Format, Loudness, Output, Target};
use crate::dispatch::StepDispatch;
use crate::exit::Exit;
use crate::report::state_error;

#[derive(Args)]
pub struct PlanArgs {
    #[command(flatten)]
    target: Target,
    /// Exit 0 when nothing would run, 2 when something would, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,
    /// Ask the repository again for a tag resolved before (tags are otherwise immutable).
    #[arg(long)]
    refresh_refs: bool,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    loudness: Loudness,
}

pub fn run(args: PlanArgs) -> ExitCode {
    let PlanArgs {
        target,
        detailed_exitcode: detailed,
        refresh_refs,
        output,
        loudness,
    } = args;
    loudness.init_tracing();
    let format = output.format();
    let error_code = |code: ExitCode| {
        if detailed {
            ExitCode::from(Exit::Unexpected)
        } else {
            code
        }
    };
    let (_, mut plan) = match target.plan(format, loudness.quiet()) {
        Ok(p) => p,
        Err(code) => return error_code(code),
    };
    let file = target.state_file();
    let mut would_run = true;
    // `plan` writes nothing: the digest and tag caches are read, not updated.
    provision_executor::cache_file::read_only();
    if file.path.symlink_metadata().is_ok() {
        let state = match file.load() {
            Ok(s) => s,
            Err(e) => return error_code(state_error(&e)),
        };
        let dispatch = StepDispatch::new().refresh_refs(refresh_refs).over(&state);
        let changes = provision_executor::preview(&plan, &dispatch, &state, false);
        would_run = changes.iter().any(|(_, p)| matches!(p, Preview::Run(_)));
        plan.changes = Some(
            changes
                .into_iter()
                .map(|(step, p)| match p {
                    Preview::Run(reason) => provision_plan::plan::Change {
                        step,
                        action: provision_plan::plan::Action::Run,
                        reason: Some(reason.to_string()),
                    },
                    Preview::Skip { kept } => provision_plan::plan::Change {
                        step,
                        action: if kept {
                            provision_plan::plan::Action::Keep
                        } else {
                            provision_plan::plan::Action::Skip
                        },
                        reason: None,
                    },
                })
                .collect(),
        );
    }
    match format {
        Format::Json => print!("{}", plan.to_json()),
        Format::Text => print!("{}", provision_plan::render_text(&plan)),
    }
    if detailed && would_run {
        ExitCode::from(Exit::Changes)
    } else {
        ExitCode::from(Exit::Ok)
    }
}
