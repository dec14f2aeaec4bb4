//! A checkout elsewhere (another cache root) hits the ccache entries of the first build,
//! thanks to CCACHE_BASEDIR. Its own test binary: it points CCACHE_DIR at a temp dir before
//! anything runs, and no other test shares the process.

mod common;

use std::process::Command;

use common::*;
use provision_steps_tools::Host;

fn stat(ccache_dir: &std::path::Path, name: &str) -> u64 {
    let out = Command::new("ccache")
        .arg("--print-stats")
        .env("CCACHE_DIR", ccache_dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('\t')?;
            (k == name).then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

#[test]
fn a_build_in_another_cache_root_hits_the_cache() {
    assert!(
        Host::current().find("ccache").is_some(),
        "ccache is not installed (see .ci/run)"
    );
    let ccache_dir = tempfile::tempdir().unwrap();
    // The only test of this binary: nothing else reads the environment concurrently.
    std::env::set_var("CCACHE_DIR", ccache_dir.path());

    let repo = hello_repo();
    let first = workspace(&repo, "");
    clone_configure_build(&first);
    let misses = stat(ccache_dir.path(), "cache_miss");
    assert!(
        misses >= 2,
        "the first build compiled through ccache ({misses} misses)"
    );

    let second = workspace(&repo, "");
    assert_ne!(first.cache(), second.cache());
    clone_configure_build(&second);
    let hits = stat(ccache_dir.path(), "direct_cache_hit")
        + stat(ccache_dir.path(), "preprocessed_cache_hit");
    assert!(hits >= 2, "the second build hit the cache ({hits} hits)");
    assert_eq!(
        stat(ccache_dir.path(), "cache_miss"),
        misses,
        "no new misses"
    );
}
