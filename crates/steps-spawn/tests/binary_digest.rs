//! The binary digest: cached per file by identity, so a second apply reads no byte of the
//! binary; a touched, replaced or rebuilt file is read again; a corrupt or unwritable cache
//! costs a read, never a wrong digest or a failed apply.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{Pool, Rig};
use provision_executor::Cancel;
use provision_steps_model::digest::{sha256_file, DigestCache};
use provision_steps_spawn::binary_digest::{binary_digest, compute};

struct Dir {
    _tmp: tempfile::TempDir,
    bin: PathBuf,
    cache: DigestCache,
}

/// `bin/llama-server` (and libraries when given) and an empty cache.
fn dir(libs: &[(&str, &[u8])]) -> Dir {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    fs::create_dir(&bin).unwrap();
    fs::write(bin.join("llama-server"), vec![7u8; 3 << 20]).unwrap();
    for (name, content) in libs {
        fs::write(bin.join(name), content).unwrap();
    }
    // Not a library: never part of the digest.
    fs::write(bin.join("README.md"), "hi").unwrap();
    let cache = DigestCache::new(tmp.path().join("cache/binaries/digests.json"));
    Dir {
        bin: bin.join("llama-server"),
        _tmp: tmp,
        cache,
    }
}

fn size(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

/// Rewrite a file the way a build or `cp` over it does: a new file renamed into place.
fn replace(p: &Path, content: &[u8]) {
    let tmp = p.with_extension("new");
    fs::write(&tmp, content).unwrap();
    fs::rename(&tmp, p).unwrap();
}

#[test]
fn a_second_digest_reads_no_byte_of_the_binary() {
    let d = dir(&[]);
    let cancel = Cancel::new();
    let first = compute(&d.bin, &d.cache, &cancel).unwrap();
    assert_eq!(first.bytes_read, size(&d.bin));
    // A lone binary: its digest is its sha256 (as before the cache).
    assert_eq!(first.digest, sha256_file(&d.bin, &cancel).unwrap());
    assert!(d.cache.file().is_file());

    // Another process (no memo): the cache has it.
    let second = compute(&d.bin, &d.cache, &cancel).unwrap();
    assert_eq!(second.bytes_read, 0);
    assert_eq!(second.digest, first.digest);
    assert_eq!(
        binary_digest(&d.bin, &d.cache, &cancel).unwrap(),
        first.digest
    );
}

#[test]
fn libraries_beside_the_binary_are_part_of_the_digest() {
    let d = dir(&[("libllama.so", b"llama v1"), ("libggml.so.0", b"ggml")]);
    let cancel = Cancel::new();
    let first = compute(&d.bin, &d.cache, &cancel).unwrap();
    let names: Vec<_> = first
        .files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(names, ["llama-server", "libggml.so.0", "libllama.so"]);
    assert_eq!(first.bytes_read, size(&d.bin) + 8 + 4);
    assert_ne!(first.digest, sha256_file(&d.bin, &cancel).unwrap());
    assert_eq!(compute(&d.bin, &d.cache, &cancel).unwrap().bytes_read, 0);

    // A rebuilt library: read again (only it), a new digest.
    let lib = d.bin.with_file_name("libllama.so");
    replace(&lib, b"llama v2");
    let rebuilt = compute(&d.bin, &d.cache, &cancel).unwrap();
    assert_eq!(rebuilt.bytes_read, 8);
    assert_ne!(rebuilt.digest, first.digest);
    assert_eq!(
        binary_digest(&d.bin, &d.cache, &cancel).unwrap(),
        rebuilt.digest
    );
}

#[test]
fn a_touched_binary_is_read_again_and_keeps_its_digest() {
    let d = dir(&[]);
    let cancel = Cancel::new();
    let first = compute(&d.bin, &d.cache, &cancel).unwrap();
    fs::File::options()
        .write(true)
        .open(&d.bin)
        .unwrap()
        .set_modified(SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    let touched = compute(&d.bin, &d.cache, &cancel).unwrap();
    assert_eq!(touched.bytes_read, size(&d.bin), "a new mtime: read again");
    assert_eq!(touched.digest, first.digest, "same content, same digest");
    assert_eq!(compute(&d.bin, &d.cache, &cancel).unwrap().bytes_read, 0);
}

#[test]
fn a_replaced_binary_changes_the_digest_even_when_memoised() {
    let d = dir(&[]);
    let cancel = Cancel::new();
    let before = binary_digest(&d.bin, &d.cache, &cancel).unwrap();
    assert_eq!(
        binary_digest(&d.bin, &d.cache, &cancel).unwrap(),
        before,
        "memoised"
    );
    // Same size, new content, new inode: a rebuild.
    replace(&d.bin, &vec![8u8; 3 << 20]);
    let after = binary_digest(&d.bin, &d.cache, &cancel).unwrap();
    assert_ne!(after, before);
    assert_eq!(after, sha256_file(&d.bin, &cancel).unwrap());
    // And the cache now holds the new one.
    let again = compute(&d.bin, &d.cache, &cancel).unwrap();
    assert_eq!((again.bytes_read, again.digest), (0, after));
}

#[test]
fn a_corrupt_cache_file_is_ignored_and_rewritten() {
    let d = dir(&[]);
    let cancel = Cancel::new();
    let good = compute(&d.bin, &d.cache, &cancel).unwrap().digest;
    for junk in [&b"{\"files\": {\"/x\": 3"[..], b"\0\xff garbage", b""] {
        fs::write(d.cache.file(), junk).unwrap();
        let read = compute(&d.bin, &d.cache, &cancel).unwrap();
        assert_eq!(read.bytes_read, size(&d.bin));
        assert_eq!(read.digest, good);
        assert_eq!(compute(&d.bin, &d.cache, &cancel).unwrap().bytes_read, 0);
    }
    // A wrong digest recorded for another identity (an older build) is not used.
    let text = fs::read_to_string(d.cache.file()).unwrap();
    fs::write(
        d.cache.file(),
        text.replace(good.trim_start_matches("sha256:"), &"0".repeat(64))
            .replace("\"size\": ", "\"size\": 1"),
    )
    .unwrap();
    let read = compute(&d.bin, &d.cache, &cancel).unwrap();
    assert_eq!((read.bytes_read > 0, read.digest), (true, good));
}

#[test]
fn an_unwritable_cache_costs_a_read_not_the_digest() {
    let d = dir(&[]);
    let cancel = Cancel::new();
    // The cache directory cannot be made: a file is in its way.
    let blocked = d.bin.parent().unwrap().parent().unwrap().join("blocked");
    fs::write(&blocked, "").unwrap();
    let cache = DigestCache::new(blocked.join("binaries/digests.json"));
    for _ in 0..2 {
        let read = compute(&d.bin, &cache, &cancel).unwrap();
        assert_eq!(read.bytes_read, size(&d.bin));
        assert_eq!(read.digest, sha256_file(&d.bin, &cancel).unwrap());
    }
}

#[test]
fn a_missing_binary_is_an_error() {
    let d = dir(&[]);
    fs::remove_file(&d.bin).unwrap();
    assert!(compute(&d.bin, &d.cache, &Cancel::new()).is_err());
}

#[test]
fn the_spawn_step_caches_the_binary_digest_under_the_cache_root() {
    let mut rig = Rig::new(&Pool::default());
    rig.up(0).unwrap();
    let digest = rig.spawned(0).binary_digest;
    let cache = DigestCache::new(rig.ws.cache().join("binaries/digests.json"));
    let again = compute(Path::new(common::FAKE), &cache, &Cancel::new()).unwrap();
    assert_eq!((again.bytes_read, again.digest), (0, digest));
    let text = fs::read_to_string(cache.file()).unwrap();
    let canonical = fs::canonicalize(common::FAKE).unwrap();
    assert!(text.contains(&*canonical.to_string_lossy()), "{text}");
}
