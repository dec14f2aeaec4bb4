//! model-resolve against the fake Hugging Face hub of `fake_hub`: the cache layout, resumed
//! and interrupted downloads, tokens, 404 and 500, offline use, checksums, concurrent resolves
//! and URL refs.

mod fake_hub;

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::thread;

use fake_hub::*;
use provision_plan::model_ref::ModelRef;

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
    let online_facts =
        provision_steps_model::resolve::facts_for(&hf("hf:org/tiny/tiny.gguf"), &s.at, &s.env)
            .unwrap();
    let offline_facts = provision_steps_model::resolve::facts_for(
        &hf("hf:org/tiny/tiny.gguf"),
        &offline.at,
        &offline.env,
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
