//! model-resolve against a fake Hugging Face hub on 127.0.0.1 (std::net, written here): resolve
//! URLs with X-Repo-Commit / X-Linked-Etag, a redirect to a "CDN" path, Range, 401 without a
//! token, 404, 500 and connections cut mid-file.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
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

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_secret_token_value";

#[derive(Default)]
struct State {
    /// (repo, file) → content.
    files: HashMap<(String, String), Vec<u8>>,
    /// Cut the body of the next N CDN GETs halfway.
    cut: usize,
    /// Delay between body chunks (for concurrency tests).
    slow: bool,
    /// CDN GETs served: their Range headers.
    cdn_gets: Vec<Option<String>>,
    /// An Authorization header reached the CDN.
    token_on_cdn: bool,
    /// Requests of any kind.
    requests: usize,
}

struct Hub {
    addr: String,
    state: Arc<Mutex<State>>,
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Hub {
    fn start() -> Hub {
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

    fn add(&self, repo: &str, file: &str, content: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert((repo.into(), file.into()), content);
    }

    fn endpoint(&self) -> String {
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

fn model_bytes() -> Vec<u8> {
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

struct Setup {
    _dir: tempfile::TempDir,
    env: ModelEnv,
    at: Where,
    hub_cache: std::path::PathBuf,
}

fn setup(hub: &Hub, token: Option<&str>) -> Setup {
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

fn hf(spec: &str) -> ModelRef {
    ModelRef::parse(spec).unwrap()
}

fn run(
    s: &Setup,
    r: &ModelRef,
    checksum: Option<&str>,
) -> Result<provision_steps_model::Resolved, provision_executor::StepError> {
    let mut log = Vec::new();
    resolve(r, checksum, &s.at, &s.env, &Cancel::new(), &mut |l| {
        log.push(l)
    })
}

#[test]
fn downloads_into_the_hf_cache_layout_and_a_warm_resolve_reads_nothing() {
    let hub = Hub::start();
    let content = model_bytes();
    hub.add("org/tiny-GGUF", "sub/tiny.gguf", content.clone());
    let s = setup(&hub, None);
    let r = run(&s, &hf("hf:org/tiny-GGUF/sub/tiny.gguf"), None).unwrap();
    let etag = sha(&content);
    let repo_dir = s.hub_cache.join("models--org--tiny-GGUF");
    assert_eq!(
        r.path,
        repo_dir
            .join("snapshots")
            .join(COMMIT)
            .join("sub/tiny.gguf")
    );
    assert_eq!(
        fs::read_link(&r.path).unwrap(),
        Path::new("../../../blobs").join(&etag)
    );
    assert_eq!(fs::read(&r.path).unwrap(), content);
    assert_eq!(
        fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    assert_eq!(r.digest, format!("sha256:{etag}"));
    assert_eq!(r.size, content.len() as u64);
    assert_eq!(r.fetched, content.len() as u64);
    // The digest was computed while downloading: nothing read back.
    assert_eq!(r.bytes_read, 0);
    assert!(!repo_dir
        .join("blobs")
        .join(format!("{etag}.incomplete"))
        .exists());

    let again = run(&s, &hf("hf:org/tiny-GGUF/sub/tiny.gguf"), None).unwrap();
    assert_eq!((again.fetched, again.bytes_read), (0, 0));
    assert_eq!(again.path, r.path);
    assert_eq!(hub.state.lock().unwrap().cdn_gets.len(), 1);
}

#[test]
fn a_cut_connection_resumes_with_a_range_request() {
    let hub = Hub::start();
    let content = model_bytes();
    hub.add("org/tiny", "tiny.gguf", content.clone());
    hub.state.lock().unwrap().cut = 1;
    let s = setup(&hub, None);
    let r = run(&s, &hf("hf:org/tiny/tiny.gguf"), None).unwrap();
    assert_eq!(fs::read(&r.path).unwrap(), content);
    let gets = hub.state.lock().unwrap().cdn_gets.clone();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0], None);
    assert_eq!(gets[1], Some(format!("bytes={}-", content.len() / 2)));
}

#[test]
fn a_download_cut_every_time_fails_then_resumes_on_the_next_apply() {
    let hub = Hub::start();
    let content = model_bytes();
    hub.add("org/tiny", "tiny.gguf", content.clone());
    hub.state.lock().unwrap().cut = 100;
    let s = setup(&hub, None);
    let err = run(&s, &hf("hf:org/tiny/tiny.gguf"), None).unwrap_err();
    assert!(err.message.contains("was interrupted"), "{}", err.message);
    assert!(err.hint.unwrap().contains("resumes"));
    let partial = s
        .hub_cache
        .join("models--org--tiny/blobs")
        .join(format!("{}.incomplete", sha(&content)));
    let kept = fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept < content.len() as u64);
    // The hub recovers: the next resolve goes on from the partial file.
    {
        let mut st = hub.state.lock().unwrap();
        st.cut = 0;
        st.cdn_gets.clear();
    }
    let r = run(&s, &hf("hf:org/tiny/tiny.gguf"), None).unwrap();
    assert_eq!(fs::read(&r.path).unwrap(), content);
    let gets = hub.state.lock().unwrap().cdn_gets.clone();
    assert_eq!(gets, vec![Some(format!("bytes={kept}-"))]);
    assert_eq!(r.fetched, content.len() as u64 - kept);
}

#[test]
fn private_repos_need_a_token_and_the_token_stays_on_the_hub() {
    let hub = Hub::start();
    hub.add("private/tiny", "tiny.gguf", model_bytes());
    let s = setup(&hub, None);
    let err = run(&s, &hf("hf:private/tiny/tiny.gguf"), None).unwrap_err();
    assert!(err.message.contains("401"), "{}", err.message);
    assert!(err.hint.as_deref().unwrap().contains("HF_TOKEN"));

    let s = setup(&hub, Some("wrong"));
    let err = run(&s, &hf("hf:private/tiny/tiny.gguf"), None).unwrap_err();
    assert!(err.message.contains("refused"), "{}", err.message);
    assert!(!err.message.contains("wrong") && !err.hint.unwrap().contains("wrong"));

    let s = setup(&hub, Some(TOKEN));
    let r = run(&s, &hf("hf:private/tiny/tiny.gguf"), None).unwrap();
    assert!(r.path.exists());
    assert!(
        !hub.state.lock().unwrap().token_on_cdn,
        "the token went to the CDN"
    );
    assert!(!format!("{:?}", s.env).contains(TOKEN));
}

#[test]
fn not_found_and_server_errors() {
    let hub = Hub::start();
    hub.add("org/tiny", "tiny.gguf", model_bytes());
    let s = setup(&hub, None);
    let err = run(&s, &hf("hf:org/tiny/other.gguf"), None).unwrap_err();
    assert!(
        err.message.contains("not found") && err.message.contains("EntryNotFound"),
        "{}",
        err.message
    );
    let err = run(&s, &hf("hf:org/tiny/tiny.gguf@v9"), None).unwrap_err();
    assert!(err.message.contains("RevisionNotFound"), "{}", err.message);
    let err = run(&s, &hf("hf:broken/tiny/tiny.gguf"), None).unwrap_err();
    assert!(err.message.contains("500"), "{}", err.message);
    // Nothing was left behind for them.
    assert!(!s.hub_cache.join("models--broken--tiny/blobs").exists());
}

#[test]
fn offline_uses_what_the_cache_has() {
    let hub = Hub::start();
    hub.add("org/tiny", "tiny.gguf", model_bytes());
    let s = setup(&hub, None);
    let first = run(&s, &hf("hf:org/tiny/tiny.gguf"), None).unwrap();
    // The hub goes away: a closed port.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut offline = Setup {
        _dir: tempfile::tempdir().unwrap(),
        env: s.env.clone(),
        at: s.at.clone(),
        hub_cache: s.hub_cache.clone(),
    };
    offline.env.hf.endpoint = dead.clone();
    let again = run(&offline, &hf("hf:org/tiny/tiny.gguf"), None).unwrap();
    assert_eq!(again.path, first.path);
    assert_eq!(again.bytes_read, 0);
    // Facts are the same online and offline (a flapping network does not restart servers).
    let online_facts = provision_steps_model::resolve::facts_for(
        &hf("hf:org/tiny/tiny.gguf"),
        &s.at,
        &s.env,
        &Cancel::new(),
    )
    .unwrap();
    let offline_facts = provision_steps_model::resolve::facts_for(
        &hf("hf:org/tiny/tiny.gguf"),
        &offline.at,
        &offline.env,
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(online_facts, offline_facts);
    assert_eq!(online_facts["hf.commit"], COMMIT);
    // A file never downloaded cannot be had offline.
    let err = run(&offline, &hf("hf:org/tiny/never.gguf"), None).unwrap_err();
    assert!(
        err.message.contains("cannot reach")
            && err.message.contains("not in the Hugging Face cache"),
        "{}",
        err.message
    );
}

#[test]
fn a_checksum_mismatch_keeps_the_download_aside() {
    let hub = Hub::start();
    let content = model_bytes();
    hub.add("org/tiny", "tiny.gguf", content.clone());
    let s = setup(&hub, None);
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let err = run(&s, &hf("hf:org/tiny/tiny.gguf"), Some(&wrong)).unwrap_err();
    let etag = sha(&content);
    assert!(
        err.message.contains(&format!("expected {wrong}")),
        "{}",
        err.message
    );
    assert!(
        err.message.contains(&format!("got sha256:{etag}")),
        "{}",
        err.message
    );
    let blobs = s.hub_cache.join("models--org--tiny/blobs");
    assert_eq!(
        fs::read(blobs.join(format!("{etag}.bad"))).unwrap(),
        content
    );
    assert!(!blobs.join(&etag).exists());
    // The right checksum works.
    let right = format!("sha256:{etag}");
    run(&s, &hf("hf:org/tiny/tiny.gguf"), Some(&right)).unwrap();
}

#[test]
fn concurrent_resolves_download_once() {
    let hub = Hub::start();
    let content: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    hub.add("org/big", "big.gguf", content.clone());
    hub.state.lock().unwrap().slow = true;
    let s = Arc::new(setup(&hub, None));
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let s = s.clone();
            thread::spawn(move || run(&s, &hf("hf:org/big/big.gguf"), None).unwrap())
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(results
        .iter()
        .all(|r| fs::read(&r.path).unwrap() == content));
    assert_eq!(hub.state.lock().unwrap().cdn_gets.len(), 1);
    assert_eq!(
        results.iter().map(|r| r.fetched).sum::<u64>(),
        content.len() as u64
    );
}

#[test]
fn refs_that_escape_the_cache_are_rejected() {
    let hub = Hub::start();
    let s = setup(&hub, None);
    for (repo, file, rev) in [
        ("org/tiny", "../../etc/passwd.gguf", "main"),
        ("org/tiny", "/abs/x.gguf", "main"),
        ("org/tiny", "a//x.gguf", "main"),
        ("org/..", "x.gguf", "main"),
        ("org/tiny", "x.gguf", ".."),
        ("org/tiny", "a\\..\\x.gguf", "main"),
    ] {
        let r = ModelRef::Hf {
            repo: repo.into(),
            file: file.into(),
            revision: rev.into(),
        };
        let err = run(&s, &r, None).unwrap_err();
        assert!(!err.message.is_empty(), "{repo} {file} {rev}");
    }
    assert_eq!(
        hub.state.lock().unwrap().requests,
        0,
        "nothing was requested"
    );
    assert!(!s.hub_cache.exists());
}

#[test]
fn url_refs_download_once_into_the_model_cache() {
    let hub = Hub::start();
    let content = model_bytes();
    hub.add("org/tiny", "tiny.gguf", content.clone());
    let s = setup(&hub, None);
    let url = format!("{}/org/tiny/resolve/main/tiny.gguf", hub.endpoint());
    let r = run(&s, &ModelRef::Url { url: url.clone() }, None).unwrap();
    assert!(r.path.starts_with(s.at.cache_dir.join("by-url")));
    assert_eq!(fs::read(&r.path).unwrap(), content);
    let again = run(&s, &ModelRef::Url { url }, None).unwrap();
    assert_eq!((again.fetched, again.bytes_read), (0, 0));
}
