//! Reading the config file within bounds: a regular file only (a FIFO would block, a device
//! such as `/dev/zero` never ends), at most [`MAX_CONFIG_BYTES`], read through a reader that
//! stops there whatever the file claims its size is, and UTF-8.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::diagnostic::Diagnostic;

/// The largest config file provision reads: 16 MiB. A config of 10,000 pools is under 2 MiB.
pub const MAX_CONFIG_BYTES: usize = 16 << 20;

const HELP: &str = "pass an existing YAML or JSON file with --config";

fn problem(message: String, help: &str) -> Diagnostic {
    Diagnostic::error("", message).with_help(help)
}

/// The text of the config file at `path`, or the problem that stops it being read.
pub(crate) fn read_bounded(path: &Path) -> Result<String, Diagnostic> {
    let cannot = |err: std::io::Error| problem(format!("cannot read the config file: {err}"), HELP);
    // Non-blocking, so that opening a FIFO with no writer returns at once (it has no effect on
    // a regular file); what was opened is then checked, not what the path named a moment ago.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else {
            use std::os::unix::fs::FileTypeExt;
            if kind.is_fifo() {
                "a FIFO"
            } else if kind.is_char_device() || kind.is_block_device() {
                "a device"
            } else if kind.is_socket() {
                "a socket"
            } else {
                "something else"
            }
        };
        return Err(problem(
            format!("the config is not a regular file: `{}` is {what}", path.display()),
            "pass a regular YAML or JSON file with --config (write a generated config to a file first)",
        ));
    }
    let too_large = || {
        problem(
            format!(
                "the config file is larger than {} MiB, the most provision reads",
                MAX_CONFIG_BYTES >> 20
            ),
            "a config of 10,000 pools is under 2 MiB: check that this is the config file",
        )
    };
    if meta.len() > MAX_CONFIG_BYTES as u64 {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte more than allowed, to tell a file at the cap from one that grew past it.
    file.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        problem(
            format!(
                "the config file is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
            "save the config as UTF-8",
        )
    })
}
