//! What can go wrong in the git-clone step, each with what to do about it.

use provision_executor::command::CommandError;
use provision_executor::FailedCommand;
use provision_executor::StepError;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The repository could not be reached (clone, fetch or ls-remote failed).
    #[error("cannot reach the repository {repo}")]
    Unreachable {
        repo: String,
        tail: String,
        /// The git command that failed.
        command: Option<Box<FailedCommand>>,
    },
    /// No tag, branch or commit has that name.
    #[error("unknown ref `{git_ref}` in {repo}: no tag, branch or commit has that name{}", nearest_list(.nearest))]
    UnknownRef {
        repo: String,
        git_ref: String,
        nearest: Vec<String>,
    },
    /// The cached checkout is unusable (and re-cloning did not help, or was not possible).
    #[error("the cached checkout {dir} is unusable: {reason}")]
    Corrupt { dir: String, reason: String },
    /// Submodules could not be updated.
    #[error("updating the submodules of {repo} failed")]
    Submodules {
        repo: String,
        tail: String,
        /// The git command that failed.
        command: Option<Box<FailedCommand>>,
    },
    /// The plan lacks the repository URL's credentials (a plan read back from JSON alone).
    #[error(transparent)]
    UnknownSecret(#[from] provision_plan::secrets::UnknownSecret),
    #[error(transparent)]
    Command(#[from] CommandError),
}

fn nearest_list(nearest: &[String]) -> String {
    if nearest.is_empty() {
        String::new()
    } else {
        format!("; nearest tags: {}", nearest.join(", "))
    }
}

impl From<GitError> for StepError {
    fn from(e: GitError) -> StepError {
        let message = e.to_string();
        match e {
            GitError::Unreachable { tail, command, .. } => StepError::new(message).with_command(command)
                .hint(
                    "check the URL, the network and the credentials (a tag already in the \
                     cache is used offline; a branch needs the network)",
                )
                .tail(tail),
            GitError::UnknownRef { .. } => StepError::new(message)
                .hint("fix `provisioning.source.ref`: a tag, a branch or a commit SHA of the repository"),
            GitError::Corrupt { .. } => StepError::new(message)
                .hint("delete the directory; the next apply clones the repository again"),
            GitError::Submodules { tail, command, .. } => StepError::new(message).with_command(command)
                .hint("check that the submodule URLs in .gitmodules are reachable, or set `submodules: false`")
                .tail(tail),
            GitError::UnknownSecret(e) => e.into(),
            GitError::Command(e) => e.into(),
        }
    }
}
