//! The devices a llama-server binary can use, from `llama-server --list-devices`:
//!
//! ```text
//! Available devices:
//!   CUDA0: NVIDIA GeForce RTX 3090 (24135 MiB, 23700 MiB free)
//! ```
//!
//! (`  (none)` for a CPU-only build; a CUDA build may print `ggml_cuda_init: …` lines first).
//! Asked once per binary digest and cached on disk like its `--help`; a list with no device is
//! not cached (the driver may be fixed, and asking a CPU-only build is cheap). A build older
//! than the flag (its `--help` does not list it) cannot say: the server's load report is then
//! the only proof.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use provision_plan::config::Backend;

use super::llamacpp_help::{HelpError, KnownFlags};
use super::run::{run_bounded, tail};
use super::BackendDevices;

/// The flag.
pub const LIST_DEVICES: &str = "--list-devices";

/// How long `llama-server --list-devices` may take (initialising CUDA on a many-GPU host takes
/// seconds).
const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// The devices listed after `Available devices:`, as printed (`CUDA0: NVIDIA … free)`); empty
/// for `(none)`; `None` when the output has no such list.
pub fn parse_list_devices(text: &str) -> Option<Vec<String>> {
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim() != "Available devices:");
    lines.next()?;
    Some(
        lines
            .take_while(|l| l.starts_with(char::is_whitespace) && !l.trim().is_empty())
            .map(str::trim)
            .filter(|l| *l != "(none)")
            .map(String::from)
            .collect(),
    )
}

/// Is a listed device (`CUDA0: NVIDIA …`) one of `backend`'s?
fn of_backend(device: &str, backend: Backend) -> bool {
    let name = device.split(':').next().unwrap_or_default();
    match backend {
        Backend::Cuda => name
            .strip_prefix("CUDA")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())),
        Backend::Cpu => true,
    }
}

/// The devices of `backend` that `binary` lists: from the cache `<cache_dir>/<digest>.devices`
/// when there, else from running `binary --list-devices` (then cached when it lists any).
pub fn backend_devices(
    binary: &Path,
    (digest, known): (&str, &KnownFlags),
    backend: Backend,
    env: &BTreeMap<String, String>,
    cache_dir: &Path,
) -> Result<BackendDevices, HelpError> {
    if !known.0.contains(LIST_DEVICES) {
        return Ok(BackendDevices::Unknown);
    }
    let file = cache_dir.join(format!("{}.devices", digest.trim_start_matches("sha256:")));
    let cached = std::fs::read_to_string(&file)
        .ok()
        .map(|text| text.lines().map(String::from).collect::<Vec<_>>())
        .filter(|d| !d.is_empty());
    let listed = match cached {
        Some(d) => d,
        None => {
            let text = run_bounded(binary, LIST_DEVICES, env, LIST_TIMEOUT)?;
            let listed = parse_list_devices(&text).ok_or_else(|| HelpError {
                message: format!(
                    "`{} {LIST_DEVICES}` printed no device list: it does not look like llama-server",
                    binary.display()
                ),
                tail: tail(&text, 20),
                command: None,
            })?;
            if !listed.is_empty() && std::fs::create_dir_all(cache_dir).is_ok() {
                let _ = provision_executor::state::write_atomic(
                    &file,
                    listed.join("\n").as_bytes(),
                    provision_executor::Durability::Fsync,
                );
            }
            listed
        }
    };
    let ours: Vec<String> = listed
        .iter()
        .filter(|d| of_backend(d, backend))
        .cloned()
        .collect();
    Ok(if ours.is_empty() {
        BackendDevices::Missing(listed)
    } else {
        BackendDevices::Listed(ours)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_read_after_its_header_cuda_init_lines_aside() {
        let gpu = "ggml_cuda_init: found 2 CUDA devices:\n  Device 0: NVIDIA GeForce RTX 3090, compute capability 8.6, VMM: yes\nAvailable devices:\n  CUDA0: NVIDIA GeForce RTX 3090 (24135 MiB, 23700 MiB free)\n  CUDA1: NVIDIA GeForce RTX 3060 (12041 MiB, 11800 MiB free)\n";
        let listed = parse_list_devices(gpu).unwrap();
        assert_eq!(
            listed,
            [
                "CUDA0: NVIDIA GeForce RTX 3090 (24135 MiB, 23700 MiB free)",
                "CUDA1: NVIDIA GeForce RTX 3060 (12041 MiB, 11800 MiB free)"
            ]
        );
        assert!(listed.iter().all(|d| of_backend(d, Backend::Cuda)));
        assert_eq!(
            parse_list_devices("Available devices:\n  (none)\n"),
            Some(vec![])
        );
        assert_eq!(
            parse_list_devices("error: invalid argument: --list-devices"),
            None
        );
        assert!(!of_backend(
            "Vulkan0: AMD Radeon (8192 MiB, 8000 MiB free)",
            Backend::Cuda
        ));
        assert!(!of_backend("CUDA_Host: x", Backend::Cuda));
    }
}
