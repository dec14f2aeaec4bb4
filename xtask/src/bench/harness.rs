//! What the figures share: the `provision` binary run on generated variants of the e2e config,
//! a raw `/health` request, and counting (under strace) the processes an apply starts and the
//! bytes it reads from the model.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

pub const E2E_CONFIG: &str = "fixtures/e2e/tiny-cpu.yaml";

pub struct Provision {
    pub root: PathBuf,
    /// Working directory of every run; runtime dirs are relative to it.
    pub work: PathBuf,
    pub bin: PathBuf,
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl Provision {
    pub fn command(&self, cmd: &str, config: &Path, runtime: &str) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg(cmd)
            .arg("--config")
            .arg(config)
            .args(["--runtime-dir", runtime])
            .current_dir(&self.work);
        c
    }

    /// Run and require success.
    pub fn ok(&self, cmd: &str, config: &Path, runtime: &str, extra: &[&str]) -> Result<Output> {
        let out = self
            .command(cmd, config, runtime)
            .args(extra)
            .output()
            .with_context(|| format!("running provision {cmd}"))?;
        ensure!(
            out.status.success(),
            "provision {cmd} --config {} failed ({}):\n{}",
            config.display(),
            out.status,
            text(&out)
        );
        Ok(out)
    }

    /// `apply`, timed (wall clock of the whole process), required to succeed.
    pub fn timed_apply(
        &self,
        config: &Path,
        runtime: &str,
        extra: &[&str],
    ) -> Result<(Duration, Output)> {
        let t = Instant::now();
        let out = self.ok("apply", config, runtime, extra)?;
        Ok((t.elapsed(), out))
    }

    pub fn down(&self, config: &Path, runtime: &str) -> Result<()> {
        self.ok("down", config, runtime, &[]).map(drop)
    }

    /// The plan as JSON.
    pub fn plan(&self, config: &Path, runtime: &str) -> Result<Value> {
        let out = self.ok("plan", config, runtime, &["--format", "json"])?;
        serde_json::from_slice(&out.stdout).context("plan JSON")
    }

    /// A variant of the e2e config, written at the same depth below the repository root as
    /// `fixtures/e2e` so its relative refs still resolve.
    pub fn variant(&self, name: &str, text: &str) -> Result<PathBuf> {
        let dir = self.root.join("target/bench-configs");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    pub fn e2e_text(&self) -> Result<String> {
        std::fs::read_to_string(self.root.join(E2E_CONFIG)).context("reading the e2e config")
    }
}

/// The e2e pool as `pools` pools (`tiny-0`, …) of `replicas` replicas each, on the given ports
/// (one per replica, pool after pool).
pub fn pools_config(e2e: &str, pools: usize, replicas: usize, ports: &[u16]) -> Result<String> {
    let (head, block) = e2e
        .split_once("pools:\n")
        .context("the e2e config has a `pools:` list")?;
    ensure!(
        block.contains("  - id: tiny\n") && block.contains("    replicas: 2\n"),
        "the e2e config no longer has pool `tiny` with 2 replicas"
    );
    ensure!(ports.len() == pools * replicas, "one port per replica");
    let mut out = format!("{head}pools:\n");
    for p in 0..pools {
        let mine = &ports[p * replicas..(p + 1) * replicas];
        let list: Vec<String> = mine.iter().map(u16::to_string).collect();
        let id = if pools == 1 {
            "tiny".to_string()
        } else {
            format!("tiny-{p}")
        };
        out.push_str(
            &block
                .replace("  - id: tiny\n", &format!("  - id: {id}\n"))
                .replace("    replicas: 2\n", &format!("    replicas: {replicas}\n"))
                .replace(
                    "      flags:",
                    &format!("      ports: [{}]\n      flags:", list.join(", ")),
                ),
        );
    }
    Ok(out)
}

/// `n` ports on 127.0.0.1 that nothing listens on now, from 18100 up.
pub fn free_ports(n: usize, taken: &mut BTreeSet<u16>) -> Vec<u16> {
    let mut out = Vec::new();
    let mut port = 18100u16;
    while out.len() < n && port < 30000 {
        if !taken.contains(&port)
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(20),
            )
            .is_err()
        {
            taken.insert(port);
            out.push(port);
        }
        port += 1;
    }
    out
}

/// The status code `GET /health` gets from 127.0.0.1:`port`; None when nothing answers.
pub fn health(port: u16) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.set_nodelay(true).ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = s.read(&mut buf[got..]).ok()?;
        if n == 0 {
            break;
        }
        got += n;
    }
    std::str::from_utf8(&buf[..got])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Expand `${cache}`, `${runtime}` and `${config_dir}` with the plan's roots.
pub fn expand(plan: &Value, s: &str) -> String {
    let root = |k: &str| plan["roots"][k].as_str().unwrap_or_default().to_string();
    s.replace("${cache}", &root("cache"))
        .replace("${runtime}", &root("runtime"))
        .replace("${config_dir}", &root("config_dir"))
}

/// The steps of `kind` in a plan.
pub fn steps<'a>(plan: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    plan["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |s| s["kind"] == kind)
}

/// Step ids of one event type (`started`, …) in a `--json` apply's output.
pub fn events(out: &Output, event: &str) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == event)
        .filter_map(|e| e["step"].as_str().map(str::to_string))
        .collect()
}

/// What an apply did to the system, from an strace log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Traced {
    /// Programs run by processes other than the traced one (one per successful execve).
    pub programs: Vec<String>,
    /// Times the model file was opened.
    pub model_opens: u64,
    /// Bytes returned by read-like calls on the model file, plus mapped lengths.
    pub model_bytes: u64,
}

/// Parse `strace -f -y` output (`-o` file). `model` is the model's canonical path.
pub fn parse_strace(log: &str, model: &str) -> Traced {
    let mut t = Traced::default();
    let root = log
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("")
        .to_string();
    let tagged = format!("<{model}>");
    // Calls split by another process's line: `pid call(... <unfinished ...>` then
    // `pid <... call resumed> ...) = N`.
    let mut pending: BTreeMap<String, String> = BTreeMap::new();
    for line in log.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let full = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some(first) = pending.remove(pid) else {
                continue;
            };
            let tail = resumed.split_once('>').map_or("", |(_, t)| t);
            format!("{first}{tail}")
        } else if let Some(first) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid.to_string(), first.to_string());
            continue;
        } else {
            rest.to_string()
        };
        let rest = full.as_str();
        let call = rest.split('(').next().unwrap_or("");
        let on_model = rest.contains(&tagged) || rest.contains(&format!("\"{model}\""));
        let result = result_of(rest);
        let Some(result) = result else { continue };
        match call {
            "execve" if result >= 0 && pid != root => {
                let prog = rest
                    .split('"')
                    .nth(1)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("pid {pid}"));
                t.programs.push(prog);
            }
            "openat" | "open" if on_model && result >= 0 => t.model_opens += 1,
            "read" | "pread64" | "readv" | "preadv" | "preadv2" | "sendfile"
            | "copy_file_range"
                if on_model && result > 0 =>
            {
                t.model_bytes += result as u64
            }
            "mmap" if on_model && result != -1 => {
                // mmap(addr, length, …): count the whole mapping as read.
                let len = rest
                    .split(", ")
                    .nth(1)
                    .and_then(|l| l.parse::<u64>().ok())
                    .unwrap_or(0);
                t.model_bytes += len;
            }
            _ => {}
        }
    }
    t
}

/// The return value after the last ` = ` (`-1` for errors, decimal or hex otherwise; an fd
/// annotated by `-y` as `5</path>` is 5).
fn result_of(line: &str) -> Option<i64> {
    let r = line.rsplit_once(" = ")?.1;
    if let Some(hex) = r.strip_prefix("0x") {
        let digits: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
        return i64::from_str_radix(&digits, 16).ok().or(Some(1));
    }
    let end = r
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(r.len(), |(i, _)| i);
    r[..end].parse().ok()
}

/// Run `provision apply` under strace and count what it did.
/// `Ok(Err(why))` when strace cannot trace here (no ptrace in this container).
pub fn traced_apply(
    p: &Provision,
    config: &Path,
    runtime: &str,
    model: &Path,
) -> Result<std::result::Result<Traced, String>> {
    let log = p.work.join("strace.log");
    let errors = p.work.join("strace.err");
    let _ = std::fs::remove_file(&log);
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-y", "-s", "256", "-o"])
        .arg(&log)
        .args([
            "-e",
            "trace=execve,open,openat,read,pread64,readv,preadv,preadv2,mmap,sendfile,copy_file_range",
        ])
        .arg(&p.bin)
        .args(["apply", "--config"])
        .arg(config)
        .args(["--runtime-dir", runtime, "-q"])
        .current_dir(&p.work);
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(&errors)?);
    let mut child = c
        .spawn()
        .context("running strace (apt-get install strace)")?;
    // strace -f waits for every traced process: a server the apply started would keep it
    // running forever.
    let t = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("apply under strace did not finish within 60 s (did it start a server?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let traced = std::fs::read_to_string(&log).unwrap_or_default();
    let stderr = std::fs::read_to_string(&errors).unwrap_or_default();
    if !traced.contains("execve(") {
        return Ok(Err(format!(
            "strace cannot trace here ({status}): {}",
            stderr.lines().next().unwrap_or_default()
        )));
    }
    ensure!(
        status.success(),
        "apply under strace failed ({status}): {stderr}"
    );
    let model = std::fs::canonicalize(model)?;
    Ok(Ok(parse_strace(&traced, &model.display().to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strace_counts_children_and_model_bytes() {
        let log = r#"100 execve("/bin/provision", ["provision"], 0x1 /* 3 vars */) = 0
100 openat(AT_FDCWD</w>, "/m/tiny.gguf", O_RDONLY|O_CLOEXEC) = 5</m/tiny.gguf>
100 read(5</m/tiny.gguf>, "GGUF"..., 1048576) = 4096
101 execve("/usr/bin/git", ["git", "--version"], 0x2 /* 3 vars */ <unfinished ...>
100 read(5</m/tiny.gguf>,  <unfinished ...>
101 <... execve resumed>) = 0
100 <... read resumed>"", 1048576) = 100
102 execve("/root/bin/cmake", ["cmake"], 0x2) = -1 ENOENT (No such file or directory)
102 execve("/usr/bin/cmake", ["cmake"], 0x2) = 0
100 read(6</other>, "x", 10) = 10
100 mmap(NULL, 8192, PROT_READ, MAP_PRIVATE, 5</m/tiny.gguf>, 0) = 0x7f0000000000
"#;
        let t = parse_strace(log, "/m/tiny.gguf");
        assert_eq!(t.programs, vec!["/usr/bin/git", "/usr/bin/cmake"]);
        assert_eq!(t.model_opens, 1);
        assert_eq!(t.model_bytes, 4096 + 100 + 8192);
    }

    #[test]
    fn pools_config_rewrites_ids_replicas_and_ports() {
        let e2e =
            "# c\npools:\n  - id: tiny\n    replicas: 2\n    provisioning:\n      flags: [a]\n";
        let two = pools_config(e2e, 2, 1, &[9000, 9001]).unwrap();
        assert_eq!(
            two,
            "# c\npools:\n  - id: tiny-0\n    replicas: 1\n    provisioning:\n      ports: [9000]\n      flags: [a]\n  - id: tiny-1\n    replicas: 1\n    provisioning:\n      ports: [9001]\n      flags: [a]\n"
        );
        let four = pools_config(e2e, 1, 4, &[1, 2, 3, 4]).unwrap();
        assert!(four.contains("  - id: tiny\n    replicas: 4\n"), "{four}");
        assert!(four.contains("ports: [1, 2, 3, 4]"), "{four}");
    }

    #[test]
    fn pools_config_fits_the_real_e2e_config() {
        let e2e = std::fs::read_to_string(crate::workspace_root().join(E2E_CONFIG)).unwrap();
        let c = pools_config(&e2e, 4, 1, &[1, 2, 3, 4]).unwrap();
        assert_eq!(c.matches("ports: [").count(), 4);
        assert!(c.contains("  - id: tiny-3\n"));
    }
}
