//! A fake Hugging Face hub on 127.0.0.1 (std::net, written here): resolve URLs with
//! X-Repo-Commit / X-Linked-Etag, a redirect to a "CDN" path, Range, 401 without a token, 404,
//! 500, connections cut mid-file, and the repository listing of
//! `/api/models/{repo}/revision/{rev}`.
#![allow(dead_code)] // each test file uses a part of it

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use provision_executor::Cancel;
use provision_plan::model_ref::ModelRef;
use provision_steps_model::digest::DigestCache;
use provision_steps_model::gguf_writer::{GgufWriter, LlamaShape};
use provision_steps_model::hf::HfEnv;
use provision_steps_model::{resolve, ModelEnv, Where};
use sha2::{Digest, Sha256};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
pub const TOKEN: &str = "hf_secret_token_value";

#[derive(Default)]
pub struct State {
    /// (repo, file) → content.
    pub files: HashMap<(String, String), Vec<u8>>,
    /// Cut the body of the next N CDN GETs halfway.
    pub cut: usize,
    /// Delay between body chunks (for concurrency tests).
    pub slow: bool,
    /// CDN GETs served: their Range headers.
    pub cdn_gets: Vec<Option<String>>,
    /// An Authorization header reached the CDN.
    pub token_on_cdn: bool,
    /// Requests of any kind.
    pub requests: usize,
}

pub struct Hub {
    addr: String,
    pub state: Arc<Mutex<State>>,
}

pub fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Hub {
    pub fn start() -> Hub {
        // The hub and its "CDN" listen on two ports: two origins, as on the real hub.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cdn_addr = cdn.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State::default()));
        for l in [listener, cdn] {
            let s = state.clone();
            let a = cdn_addr.clone();
            thread::spawn(move || {
                for conn in l.incoming().flatten() {
                    let s = s.clone();
                    let a = a.clone();
                    thread::spawn(move || serve(conn, &s, &a));
                }
            });
        }
        Hub { addr, state }
    }

    pub fn add(&self, repo: &str, file: &str, content: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert((repo.into(), file.into()), content);
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn respond(conn: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).ok();
    conn.write_all(body).ok();
}

#[allow(clippy::too_many_lines)] // a test: one scenario, read top to bottom
fn serve(mut conn: TcpStream, state: &Mutex<State>, cdn_addr: &str) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    state.lock().unwrap().requests += 1;
    let auth_ok =
        headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {TOKEN}"));
    let head = method == "HEAD";
    let no_body: &[u8] = &[];

    if let Some(etag) = path.strip_prefix("/cdn/") {
        let content = {
            let mut st = state.lock().unwrap();
            st.token_on_cdn |= headers.contains_key("authorization");
            st.cdn_gets.push(headers.get("range").cloned());
            st.files.values().find(|c| sha(c) == etag).cloned()
        };
        let Some(content) = content else {
            return respond(&mut conn, "404 Not Found", &[], no_body);
        };
        let len = content.len();
        let start = headers
            .get("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|r| r.parse::<usize>().ok());
        let (status, from, mut hs): (&str, usize, Vec<(String, String)>) = match start {
            Some(s) if s >= len => {
                return respond(
                    &mut conn,
                    "416 Range Not Satisfiable",
                    &[("Content-Range".into(), format!("bytes */{len}"))],
                    no_body,
                )
            }
            Some(s) => (
                "206 Partial Content",
                s,
                vec![(
                    "Content-Range".into(),
                    format!("bytes {s}-{}/{len}", len - 1),
                )],
            ),
            None => ("200 OK", 0, vec![]),
        };
        hs.push(("Content-Length".into(), (len - from).to_string()));
        hs.push(("Accept-Ranges".into(), "bytes".into()));
        let body = &content[from..];
        let (cut, slow) = {
            let mut st = state.lock().unwrap();
            let cut = st.cut > 0;
            if cut {
                st.cut -= 1;
            }
            (cut, st.slow)
        };
        let mut head_s = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
        for (k, v) in &hs {
            head_s.push_str(&format!("{k}: {v}\r\n"));
        }
        head_s.push_str("\r\n");
        conn.write_all(head_s.as_bytes()).ok();
        let send = if cut { &body[..body.len() / 2] } else { body };
        for chunk in send.chunks(16 * 1024) {
            if conn.write_all(chunk).is_err() {
                return;
            }
            if slow {
                thread::sleep(Duration::from_millis(5));
            }
        }
        conn.flush().ok();
        // Dropping the connection mid-body is the cut.
        return;
    }

    if let Some(rest) = path.strip_prefix("/api/models/") {
        return serve_listing(&mut conn, state, rest, auth_ok);
    }

    // /{org}/{name}/resolve/{rev}/{file...}
    let segs: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if segs.len() != 5 || segs[2] != "resolve" {
        return respond(&mut conn, "404 Not Found", &[], no_body);
    }
    let repo = format!("{}/{}", segs[0], segs[1]);
    let (rev, file) = (segs[3], segs[4]);
    if segs[0] == "broken" {
        return respond(&mut conn, "500 Internal Server Error", &[], b"oops");
    }
    if segs[0] == "private" && !auth_ok {
        return respond(
            &mut conn,
            "401 Unauthorized",
            &[("X-Error-Code".into(), "GatedRepo".into())],
            no_body,
        );
    }
    if rev != "main" && rev != COMMIT {
        return respond(
            &mut conn,
            "404 Not Found",
            &[("X-Error-Code".into(), "RevisionNotFound".into())],
            no_body,
        );
    }
    let content = state
        .lock()
        .unwrap()
        .files
        .get(&(repo.clone(), file.to_string()))
        .cloned();
    let Some(content) = content else {
        return respond(
            &mut conn,
            "404 Not Found",
            &[("X-Error-Code".into(), "EntryNotFound".into())],
            no_body,
        );
    };
    let etag = sha(&content);
    let hs = vec![
        ("X-Repo-Commit".into(), COMMIT.into()),
        ("X-Linked-Etag".into(), format!("\"{etag}\"")),
        ("X-Linked-Size".into(), content.len().to_string()),
        ("ETag".into(), "\"not-the-file-sha\"".into()),
        (
            "Location".into(),
            format!("http://{cdn_addr}/cdn/{etag}?X-Amz-Signature=abc"),
        ),
        ("Content-Length".into(), "0".into()),
    ];
    let _ = head;
    respond(&mut conn, "302 Found", &hs, no_body)
}

pub fn model_bytes() -> Vec<u8> {
    GgufWriter::llama(LlamaShape {
        n_layer: 2,
        n_embd: 64,
        n_head: 4,
        n_head_kv: 4,
        n_ff: 128,
        n_vocab: 300,
        n_ctx_train: 256,
        weight_type: 0,
        output: true,
    })
    .to_bytes()
}

pub struct Setup {
    pub _dir: tempfile::TempDir,
    pub env: ModelEnv,
    pub at: Where,
    pub hub_cache: std::path::PathBuf,
}

pub fn setup(hub: &Hub, token: Option<&str>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let hub_cache = dir.path().join("hf/hub");
    Setup {
        env: ModelEnv {
            hf: HfEnv {
                endpoint: hub.endpoint(),
                token: token.map(String::from),
                hub_cache: hub_cache.clone(),
            },
        },
        at: Where {
            cache_dir: dir.path().join("models"),
            digests: DigestCache::new(dir.path().join("models/digests.json")),
            base_dir: dir.path().to_path_buf(),
        },
        hub_cache,
        _dir: dir,
    }
}

pub fn hf(spec: &str) -> ModelRef {
    ModelRef::parse(spec).unwrap()
}

pub fn run(
    s: &Setup,
    r: &ModelRef,
    checksum: Option<&str>,
) -> Result<provision_steps_model::Resolved, provision_executor::StepError> {
    let mut log = Vec::new();
    resolve(r, checksum, &s.at, &s.env, &Cancel::new(), &mut |l| {
        log.push(l)
    })
}

/// `GET /api/models/{org}/{name}/revision/{rev}`: the commit and the repository's files, as
/// the hub's model info (`sha`, `siblings[].rfilename`).
fn serve_listing(conn: &mut TcpStream, state: &Mutex<State>, rest: &str, auth_ok: bool) {
    let segs: Vec<&str> = rest.split('/').collect();
    let no_body: &[u8] = &[];
    let [org, name, "revision", rev] = segs[..] else {
        return respond(conn, "404 Not Found", &[], no_body);
    };
    if org == "broken" {
        return respond(conn, "500 Internal Server Error", &[], b"oops");
    }
    if org == "private" && !auth_ok {
        let code = [("X-Error-Code".to_string(), "GatedRepo".to_string())];
        return respond(conn, "401 Unauthorized", &code, no_body);
    }
    if rev != "main" && rev != COMMIT {
        let code = [("X-Error-Code".to_string(), "RevisionNotFound".to_string())];
        return respond(conn, "404 Not Found", &code, no_body);
    }
    let repo = format!("{org}/{name}");
    let mut files: Vec<String> = state
        .lock()
        .unwrap()
        .files
        .keys()
        .filter(|(r, _)| *r == repo)
        .map(|(_, f)| f.clone())
        .collect();
    if files.is_empty() {
        let code = [("X-Error-Code".to_string(), "RepoNotFound".to_string())];
        return respond(conn, "404 Not Found", &code, no_body);
    }
    files.push(".gitattributes".into());
    files.sort();
    let siblings: Vec<serde_json::Value> = files
        .iter()
        .map(|f| serde_json::json!({ "rfilename": f }))
        .collect();
    let body = serde_json::json!({ "id": repo, "sha": COMMIT, "siblings": siblings }).to_string();
    let hs = [
        ("Content-Type".to_string(), "application/json".to_string()),
        ("Content-Length".to_string(), body.len().to_string()),
    ];
    respond(conn, "200 OK", &hs, body.as_bytes())
}
