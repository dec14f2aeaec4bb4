//! A repository behind HTTP Basic auth, served by this test over real HTTP (git's "dumb"
//! protocol: the bare repository's files): the credentials of `http://user:pw@host/…` reach
//! git through its environment, never a command line (every local user can read
//! `/proc/<pid>/cmdline`) and never the checkout's `.git/config`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use provision_executor::Outcome;
use provision_plan::outputs::GitCloneOutputs;
use provision_plan::step::GitClone;
use provision_plan::{StepOutputs, StepSpec};
use provision_steps_git::run;
use provision_steps_testkit::{cpu_pool_config, git, TestRepo, Workspace};

const PASSWORD: &str = "s3cr3t-pw-4711";
/// base64("alice:s3cr3t-pw-4711")
const EXPECTED: &str = "Basic YWxpY2U6czNjcjN0LXB3LTQ3MTE=";

/// What the server saw.
#[derive(Default)]
struct Seen {
    requests: usize,
    refused: usize,
    /// Command lines (of any process) holding the password while a request was served.
    leaks: Vec<String>,
}

/// Serve the files of the bare repository under `root` to requests with the right Basic
/// credentials; 401 to others.
fn serve(root: PathBuf) -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            answer(stream, &root, &record);
        }
    });
    (port, seen)
}

fn answer(mut stream: TcpStream, root: &Path, seen: &Mutex<Seen>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap_or(0);
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut auth = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                auth = Some(value.trim().to_string());
            }
        }
    }
    let leaks = command_lines_holding(PASSWORD);
    let mut s = seen.lock().unwrap();
    s.requests += 1;
    s.leaks.extend(leaks);
    if auth.as_deref() != Some(EXPECTED) {
        s.refused += 1;
        let _ = stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"t\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    drop(s);
    let rel = path.split('?').next().unwrap().trim_start_matches('/');
    match std::fs::read(root.join(rel)) {
        Ok(body) if !rel.contains("..") => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
        _ => {
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    }
}

/// The command lines of every process that hold `needle`.
fn command_lines_holding(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) {
                out.push(text);
            }
        }
    }
    out
}

fn spec(ws: &Workspace) -> GitClone {
    match &ws.step("git-clone").spec {
        StepSpec::GitClone(g) => g.clone(),
        _ => unreachable!(),
    }
}

#[test]
fn credentials_reach_git_by_its_environment_not_its_command_line_or_its_config() {
    let repo = TestRepo::new();
    let commit = repo.commit(&[("VERSION", "1\n")], "first");
    repo.tag("v1");
    let served = tempfile::tempdir().unwrap();
    let bare = served.path().join("repo.git");
    git(
        served.path(),
        &["clone", "--quiet", "--bare", &repo.url(), "repo.git"],
    );
    git(&bare, &["update-server-info"]);
    let (port, seen) = serve(served.path().to_path_buf());
    let url = format!("http://alice:{PASSWORD}@127.0.0.1:{port}/repo.git");
    let ws = Workspace::new(&cpu_pool_config(&url, "v1", false, ""));

    let out = run(&spec(&ws), &ws.cx("git-clone", BTreeMap::new())).unwrap();
    let first = cloned(&out);
    assert_eq!(first.commit, commit);
    let dir = PathBuf::from(&first.dir);
    {
        let s = seen.lock().unwrap();
        assert!(s.requests > 0);
        assert!(s.leaks.is_empty(), "on a command line: {:?}", s.leaks);
        // Sent with the first request (git itself would ask without, then again with them).
        assert_eq!(s.refused, 0, "a request came without the credentials");
    }
    let config = std::fs::read_to_string(dir.join(".git/config")).unwrap();
    assert!(!config.contains(PASSWORD), "{config}");
    assert!(!ws.log_text().contains(PASSWORD), "{}", ws.log_text());

    // A checkout an earlier provision cloned with the credentials in its origin URL: kept (the
    // same origin), and its config loses them.
    git(&dir, &["remote", "set-url", "origin", &url]);
    let again = run(&spec(&ws), &ws.cx("git-clone", BTreeMap::new())).unwrap();
    assert_eq!(cloned(&again).commit, commit);
    let config = std::fs::read_to_string(dir.join(".git/config")).unwrap();
    assert!(!config.contains(PASSWORD), "{config}");
    assert!(
        ws.log_text()
            .contains("removed the credentials from the checkout's origin URL"),
        "{}",
        ws.log_text()
    );
    assert!(
        !ws.log_text().contains("cloning again"),
        "{}",
        ws.log_text()
    );
    let s = seen.lock().unwrap();
    assert_eq!(s.refused, 0);
    assert!(s.leaks.is_empty(), "on a command line: {:?}", s.leaks);
}

/// What a passed git-clone recorded.
fn cloned(out: &Outcome) -> &GitCloneOutputs {
    out.outputs
        .as_ref()
        .and_then(StepOutputs::get::<GitCloneOutputs>)
        .expect("git-clone outputs")
}
