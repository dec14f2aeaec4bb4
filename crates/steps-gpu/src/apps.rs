//! The processes using GPU memory: `nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory
//! --format=csv,noheader,nounits`, one line per process and GPU. A host with none prints
//! nothing (some drivers: "No running processes found"); a driver that cannot say how much a
//! process uses (inside some containers, on MIG) prints `[N/A]` or `[Not Supported]` there.

use provision_executor::Cancel;
use provision_steps_tools::Host;

use crate::csv_line::CsvLine;
use crate::detect::{query, DetectError};

/// A process using GPU memory (a step output, hence in the plan crate).
pub use provision_plan::outputs::ComputeApp;

/// The query, as `nvidia-smi`'s arguments.
pub const APPS_QUERY: [&str; 3] = [
    "nvidia-smi",
    "--query-compute-apps=pid,gpu_uuid,used_memory",
    "--format=csv,noheader,nounits",
];

/// Parse what the query prints (`replica` is left for the caller to fill in).
pub fn parse_apps(command: &str, out: &str) -> Result<Vec<ComputeApp>, DetectError> {
    let none = |l: &str| l.eq_ignore_ascii_case("No running processes found");
    CsvLine::all(command, out, 3, none)?
        .into_iter()
        .map(|l| {
            let pid = u32::try_from(l.number(0, "pid")?)
                .map_err(|_| l.garbage("the pid is too large".into()))?;
            let gpu_uuid = l.uuid(1)?.to_string();
            let used = l.fields[2];
            let used_memory_mib = match used.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) if used.starts_with('[') => None,
                Err(_) => return Err(l.garbage(format!("used_memory `{used}` is not a number"))),
            };
            Ok(ComputeApp {
                pid,
                gpu_uuid,
                used_memory_mib,
                replica: None,
            })
        })
        .collect()
}

/// The processes using GPU memory now.
pub fn compute_apps(host: &Host, cancel: &Cancel) -> Result<Vec<ComputeApp>, DetectError> {
    let argv: Vec<String> = APPS_QUERY.map(String::from).to_vec();
    let out = query(&argv, host, cancel)?;
    parse_apps(&argv.join(" "), &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_a_busy_host_parse_and_unknown_use_is_none() {
        let out = "4242, GPU-6f1a2b3c-0000-1111-2222-333344445555, 14336\n\
                   77, GPU-6f1a2b3c-0000-1111-2222-333344445555, [N/A]\n";
        let apps = parse_apps("q", out).unwrap();
        assert_eq!(apps.len(), 2);
        assert_eq!(apps[0].pid, 4242);
        assert_eq!(apps[0].used_memory_mib, Some(14336));
        assert_eq!(apps[1].used_memory_mib, None);
    }

    #[test]
    fn an_idle_host_has_no_apps_and_garbage_is_refused() {
        assert!(parse_apps("q", "").unwrap().is_empty());
        assert!(parse_apps("q", "No running processes found\n")
            .unwrap()
            .is_empty());
        let e = parse_apps(
            "q",
            "Failed to initialize NVML: Driver/library version mismatch\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(parse_apps("q", "x, GPU-1, 5\n").is_err());
    }
}
