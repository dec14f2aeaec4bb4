//! Detecting NVIDIA GPUs with `nvidia-smi --query-gpu=… --format=csv,noheader,nounits`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use provision_executor::{Cancel, ExitState, FailedCommand};
use provision_steps_tools::Host;

use crate::csv_line::CsvLine;

/// How long `nvidia-smi` may take (a wedged driver can hang it).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// One GPU as `nvidia-smi` reports it (a step output, hence in the plan crate).
pub use provision_plan::outputs::Gpu;

/// Why no GPU list could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    #[error("`nvidia-smi` is not on PATH: no NVIDIA driver is installed")]
    NotInstalled,
    #[error("`{command}` could not start: {detail}")]
    Spawn { command: String, detail: String },
    #[error("`{command}` failed with exit code {}: {output}", code(.status))]
    Failed {
        command: String,
        status: ExitState,
        output: String,
    },
    #[error("`{command}` took more than {}s (a wedged driver?)", TIMEOUT.as_secs())]
    Timeout { command: String },
    #[error("`{command}` printed something that is not a GPU list: line {line}: {text:?} ({why})")]
    Garbage {
        command: String,
        line: usize,
        text: String,
        why: String,
    },
    #[error("cancelled")]
    Cancelled,
}

impl DetectError {
    /// The command that failed to start or failed, as fields of the step error.
    pub fn failed_command(&self) -> Option<Box<FailedCommand>> {
        let (command, status) = match self {
            DetectError::Spawn { command, .. } => (command, None),
            DetectError::Failed {
                command, status, ..
            } => (command, Some(*status)),
            _ => return None,
        };
        Some(Box::new(FailedCommand {
            command: command.clone(),
            cwd: None,
            status,
            output_log: None,
        }))
    }
}

/// `9`, or `none (killed by signal 9)`.
fn code(status: &ExitState) -> String {
    match (status.exit_code, status.signal) {
        (Some(c), _) => c.to_string(),
        (None, Some(s)) => format!("none (killed by signal {s})"),
        (None, None) => "none".into(),
    }
}

/// Parse the CSV `nvidia-smi` prints for the query
/// `index,uuid,name,memory.total,memory.free,driver_version,compute_cap`.
pub fn parse(command: &str, out: &str) -> Result<Vec<Gpu>, DetectError> {
    CsvLine::all(command, out, 7, |_| false)?
        .into_iter()
        .map(|l| {
            let index = u32::try_from(l.number(0, "index")?)
                .map_err(|_| l.garbage("the index is too large".into()))?;
            let uuid = l.uuid(1)?;
            let f = &l.fields;
            let cc = if f[6].starts_with('[') { "" } else { f[6] };
            Ok(Gpu {
                index,
                uuid: uuid.into(),
                name: f[2].into(),
                memory_total_mib: l.number(3, "memory.total")?,
                memory_free_mib: l.number(4, "memory.free")?,
                driver: f[5].into(),
                compute_capability: cc.into(),
            })
        })
        .collect()
}

/// Run `argv` (its program looked up on `host`'s PATH) and parse the GPU list.
pub fn detect(argv: &[String], host: &Host, cancel: &Cancel) -> Result<Vec<Gpu>, DetectError> {
    let out = query(argv, host, cancel)?;
    // "No devices were found" with exit 0 on some driver versions.
    if out.trim().eq_ignore_ascii_case("No devices were found") {
        return Ok(Vec::new());
    }
    parse(&argv.join(" "), &out)
}

/// Run `argv` (its program looked up on `host`'s PATH), bounded by [`TIMEOUT`]: its stdout.
pub fn query(argv: &[String], host: &Host, cancel: &Cancel) -> Result<String, DetectError> {
    let (program, args) = argv.split_first().ok_or(DetectError::NotInstalled)?;
    let command = argv.join(" ");
    let exe = host.find(program).ok_or(DetectError::NotInstalled)?;
    let mut child = Command::new(&exe)
        .args(args)
        .env("PATH", host.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| DetectError::Spawn {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        stdout.read_to_end(&mut s).ok();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        stderr.read_to_end(&mut s).ok();
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| DetectError::Spawn {
            command: command.clone(),
            detail: e.to_string(),
        })? {
            break status;
        }
        if cancel.is_cancelled() || started.elapsed() > TIMEOUT {
            child.kill().ok();
            child.wait().ok();
            return Err(if cancel.is_cancelled() {
                DetectError::Cancelled
            } else {
                DetectError::Timeout { command }
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let err = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    if !status.success() {
        let text = format!("{}\n{}", out.trim(), err.trim());
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" / ");
        return Err(DetectError::Failed {
            command,
            status: status.into(),
            output: if tail.is_empty() {
                "no output".into()
            } else {
                tail
            },
        });
    }
    Ok(out)
}
