//! What can stop an export.

use provision_plan::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The config is invalid or `--pool` names no pool: exit 2, rendered like every command's
    /// config errors.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The command line asks for something the config cannot give (a local model to download
    /// in the cluster, a malformed size, …): exit 2.
    #[error("{message}")]
    Usage {
        message: String,
        help: Option<String>,
    },
}

impl ExportError {
    pub fn usage(message: impl Into<String>, help: impl Into<String>) -> ExportError {
        ExportError::Usage {
            message: message.into(),
            help: Some(help.into()),
        }
    }
}
