//! The git-clone step against real repositories made by the tests with the real `git`.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use provision_executor::StepError;
use provision_plan::outputs::GitCloneOutputs;
use provision_plan::step::GitClone;
use provision_plan::{StepOutputs, StepSpec};
use provision_steps_git::{facts, run, RefLookup};
use provision_steps_testkit::{cpu_pool_config, git, TestRepo, Workspace};

/// A repository with tags v1.0, v1.1, v2.0 (annotated) on successive commits of `main`.
fn tagged_repo() -> (TestRepo, Vec<String>) {
    let repo = TestRepo::new();
    let mut commits = Vec::new();
    for (i, tag) in ["v1.0", "v1.1", "v2.0"].iter().enumerate() {
        commits.push(repo.commit(
            &[
                ("VERSION", &format!("{tag}\n")),
                ("README", &format!("r{i}\n")),
            ],
            &format!("release {tag}"),
        ));
        repo.tag(tag);
    }
    repo.commit(&[(".gitignore", "*.o\n")], "ignore objects");
    (repo, commits)
}

fn workspace(url: &str, git_ref: &str, submodules: bool) -> Workspace {
    Workspace::new(&cpu_pool_config(url, git_ref, submodules, ""))
}

fn spec(ws: &Workspace) -> GitClone {
    match &ws.step("git-clone").spec {
        StepSpec::GitClone(g) => g.clone(),
        _ => unreachable!(),
    }
}

fn run_step(ws: &Workspace) -> Result<(String, PathBuf), StepError> {
    let out = run(&spec(ws), &ws.cx("git-clone", BTreeMap::new()))?;
    let cloned = out
        .outputs
        .as_ref()
        .and_then(StepOutputs::get::<GitCloneOutputs>)
        .expect("git-clone outputs");
    let dir = PathBuf::from(&cloned.dir);
    assert_eq!(out.artifacts, std::slice::from_ref(&dir));
    Ok((cloned.commit.clone(), dir))
}

fn fact(ws: &Workspace) -> Result<String, StepError> {
    fact_with(ws, RefLookup::Cached)
}

fn fact_with(ws: &Workspace, lookup: RefLookup) -> Result<String, StepError> {
    facts(&spec(ws), &ws.cx("git-clone", BTreeMap::new()), lookup).map(|f| f["commit"].clone())
}

/// How many `git ls-remote` the steps of `ws` ran (every command is in the step log).
fn ls_remotes(ws: &Workspace) -> usize {
    ws.log_text()
        .lines()
        .filter(|l| l.starts_with("$ git ") && l.contains(" ls-remote "))
        .count()
}

#[test]
fn a_tag_is_cloned_into_the_planned_dir_at_its_commit() {
    let (repo, commits) = tagged_repo();
    let ws = workspace(&repo.url(), "v1.1", false);
    assert_eq!(fact(&ws).unwrap(), commits[1], "annotated tags are peeled");
    let (commit, dir) = run_step(&ws).unwrap();
    assert_eq!(commit, commits[1]);
    assert!(dir.starts_with(ws.cache().join("src")), "{}", dir.display());
    assert_eq!(fs::read_to_string(dir.join("VERSION")).unwrap(), "v1.1\n");
    assert_eq!(git(&dir, &["rev-parse", "HEAD"]), commits[1]);
    // Again, over the existing checkout: the same.
    assert_eq!(run_step(&ws).unwrap(), (commit, dir));
    assert!(ws.log_text().contains("clone --no-checkout -- file://"));
}

#[test]
fn a_moved_branch_is_a_different_commit_fact_and_is_checked_out() {
    let (repo, _) = tagged_repo();
    let ws = workspace(&repo.url(), "main", false);
    let before = fact(&ws).unwrap();
    assert_eq!(before, repo.head());
    assert_eq!(run_step(&ws).unwrap().0, before);
    let moved = repo.commit(&[("VERSION", "next\n")], "move main");
    assert_eq!(fact(&ws).unwrap(), moved);
    let (commit, dir) = run_step(&ws).unwrap();
    assert_eq!(commit, moved);
    assert_eq!(fs::read_to_string(dir.join("VERSION")).unwrap(), "next\n");
}

#[test]
fn a_pinned_sha_needs_no_network() {
    let (repo, commits) = tagged_repo();
    let ws = workspace(&repo.url(), &commits[0], false);
    assert_eq!(fact(&ws).unwrap(), commits[0]);
    assert_eq!(fact_with(&ws, RefLookup::Refresh).unwrap(), commits[0]);
    assert_eq!(ls_remotes(&ws), 0);
    assert!(ws.log_text().is_empty(), "no command: {}", ws.log_text());
    let (_, dir) = run_step(&ws).unwrap();
    // The origin is gone: the fact needs nothing, and the checkout already has the commit.
    drop(repo);
    assert_eq!(fact(&ws).unwrap(), commits[0]);
    fs::write(dir.join("VERSION"), "dirty\n").unwrap();
    let (commit, dir) = run_step(&ws).unwrap();
    assert_eq!(commit, commits[0]);
    assert_eq!(fs::read_to_string(dir.join("VERSION")).unwrap(), "v1.0\n");
}

#[test]
fn a_tag_is_asked_for_once_unless_refs_are_refreshed() {
    let (repo, commits) = tagged_repo();
    let ws = workspace(&repo.url(), "v1.1", false);
    assert_eq!(fact(&ws).unwrap(), commits[1]);
    assert_eq!(ls_remotes(&ws), 1);
    assert!(ws.cache().join("refs.json").is_file());
    // Resolved before: the recorded commit, no process at all.
    let log = ws.log_text();
    assert_eq!(fact(&ws).unwrap(), commits[1]);
    assert_eq!(ws.log_text(), log, "nothing ran");
    // --refresh-refs asks the repository again.
    assert_eq!(fact_with(&ws, RefLookup::Refresh).unwrap(), commits[1]);
    assert_eq!(ls_remotes(&ws), 2);
    assert_eq!(run_step(&ws).unwrap().0, commits[1]);

    // The tag is moved by force: not seen until refs are refreshed, then recorded.
    let moved = repo.commit(&[("VERSION", "v1.1 again\n")], "re-release v1.1");
    repo.git(&["tag", "-f", "-a", "-m", "v1.1", "v1.1"]);
    assert_eq!(fact(&ws).unwrap(), commits[1]);
    assert_eq!(ls_remotes(&ws), 2);
    assert_eq!(fact_with(&ws, RefLookup::Refresh).unwrap(), moved);
    assert_eq!(ls_remotes(&ws), 3);
    assert_eq!(fact(&ws).unwrap(), moved);
    assert_eq!(ls_remotes(&ws), 3);
    let (commit, dir) = run_step(&ws).unwrap();
    assert_eq!(commit, moved);
    assert_eq!(
        fs::read_to_string(dir.join("VERSION")).unwrap(),
        "v1.1 again\n"
    );

    // Another tag of the same repository is asked for once too.
    let mut ws = ws;
    ws.replan(&cpu_pool_config(&repo.url(), "v2.0", false, ""));
    assert_eq!(fact(&ws).unwrap(), commits[2]);
    assert_eq!(fact(&ws).unwrap(), commits[2]);
    assert_eq!(ls_remotes(&ws), 4);
}

#[test]
fn a_branch_is_asked_for_every_time() {
    let (repo, _) = tagged_repo();
    let ws = workspace(&repo.url(), "main", false);
    for n in 1..=3 {
        assert_eq!(fact(&ws).unwrap(), repo.head());
        assert_eq!(ls_remotes(&ws), n);
    }
    let moved = repo.commit(&[("VERSION", "next\n")], "move main");
    assert_eq!(fact(&ws).unwrap(), moved);
    assert_eq!(ls_remotes(&ws), 4);
    let recorded = fs::read_to_string(ws.cache().join("refs.json")).unwrap_or_default();
    assert!(!recorded.contains("main"), "{recorded}");
}

#[test]
fn an_abbreviated_sha_is_its_own_fact_and_checks_out_the_full_commit() {
    let (repo, commits) = tagged_repo();
    let short = &commits[2][..9];
    let ws = workspace(&repo.url(), short, false);
    assert_eq!(fact(&ws).unwrap(), short);
    assert_eq!(run_step(&ws).unwrap().0, commits[2]);
    assert_eq!(
        fact(&ws).unwrap(),
        short,
        "the same before and after the clone"
    );
}

#[test]
fn an_unknown_ref_is_named_with_the_nearest_tags() {
    let (repo, _) = tagged_repo();
    let ws = workspace(&repo.url(), "v1.2", false);
    let expected = format!(
        "unknown ref `v1.2` in {}: no tag, branch or commit has that name; nearest tags: v1.0, v1.1, v2.0",
        repo.url()
    );
    let err = fact(&ws).unwrap_err();
    assert_eq!(err.message, expected);
    assert!(err.hint.unwrap().contains("provisioning.source.ref"));
    // run: first a fresh clone, then an existing checkout.
    assert_eq!(run_step(&ws).unwrap_err().message, expected);
    assert_eq!(run_step(&ws).unwrap_err().message, expected);
    // An abbreviated SHA that is no commit.
    let ws = workspace(&repo.url(), "abcdef12", false);
    let err = run_step(&ws).unwrap_err();
    assert!(
        err.message.starts_with("unknown ref `abcdef12`"),
        "{}",
        err.message
    );
}

#[test]
fn a_dirty_checkout_is_reset_and_cleaned() {
    let (repo, commits) = tagged_repo();
    let ws = workspace(&repo.url(), "main", false);
    let (_, dir) = run_step(&ws).unwrap();
    git(&dir, &["checkout", "-q", "--detach", &commits[0]]);
    fs::write(dir.join("VERSION"), "edited\n").unwrap();
    fs::write(dir.join("untracked.txt"), "x").unwrap();
    fs::write(dir.join("ignored.o"), "x").unwrap();
    let (commit, dir) = run_step(&ws).unwrap();
    assert_eq!(commit, repo.head());
    assert_eq!(git(&dir, &["status", "--porcelain", "--ignored"]), "");
    assert_eq!(fs::read_to_string(dir.join("VERSION")).unwrap(), "v2.0\n");
}

#[test]
fn a_corrupt_cache_is_cloned_again() {
    let (repo, commits) = tagged_repo();
    let ws = workspace(&repo.url(), "v2.0", false);
    let (_, dir) = run_step(&ws).unwrap();

    // Objects gone: the fetch brings them back.
    fs::remove_dir_all(dir.join(".git/objects")).unwrap();
    fs::create_dir(dir.join(".git/objects")).unwrap();
    let (commit, dir) = run_step(&ws).unwrap();
    assert_eq!(commit, commits[2]);
    assert_eq!(fs::read_to_string(dir.join("VERSION")).unwrap(), "v2.0\n");

    // A garbage HEAD: git no longer sees a repository.
    fs::write(dir.join(".git/HEAD"), "garbage\n").unwrap();
    let (commit, dir) = run_step(&ws).unwrap();
    assert_eq!(commit, commits[2]);
    assert!(
        ws.log_text()
            .contains("the cached checkout is unusable (git cannot read it"),
        "{}",
        ws.log_text()
    );

    // Not a repository any more.
    fs::remove_dir_all(dir.join(".git")).unwrap();
    assert_eq!(run_step(&ws).unwrap().0, commits[2]);

    // A checkout of another repository in our directory.
    let other = TestRepo::new();
    other.commit(&[("OTHER", "1")], "other");
    git(&dir, &["remote", "set-url", "origin", &other.url()]);
    let (commit, dir) = run_step(&ws).unwrap();
    assert_eq!(commit, commits[2]);
    assert_eq!(
        git(&dir, &["config", "--get", "remote.origin.url"]),
        repo.url()
    );

    // A half-finished clone left behind is ignored and replaced.
    fs::remove_dir_all(&dir).unwrap();
    let partial = dir.with_file_name(format!(
        "{}.partial",
        dir.file_name().unwrap().to_string_lossy()
    ));
    fs::create_dir_all(partial.join("junk")).unwrap();
    assert_eq!(run_step(&ws).unwrap().0, commits[2]);
    assert!(!partial.exists());
}

#[test]
fn an_unreachable_repository_says_so_and_keeps_the_cache() {
    let ws = workspace("file:///nonexistent/provision/repo.git", "main", false);
    let err = run_step(&ws).unwrap_err();
    assert_eq!(
        err.message,
        "cannot reach the repository file:///nonexistent/provision/repo.git"
    );
    assert!(err.hint.unwrap().contains("network"));
    assert!(err
        .tail
        .unwrap()
        .contains("does not appear to be a git repository"));
    assert!(fact(&ws).unwrap_err().message.starts_with("cannot reach"));

    // A repository that went away after the clone: a branch fails, the cache stays.
    let (repo, commits) = tagged_repo();
    let ws = workspace(&repo.url(), "main", false);
    let (_, dir) = run_step(&ws).unwrap();
    drop(repo);
    assert!(fact(&ws).unwrap_err().message.starts_with("cannot reach"));
    assert!(run_step(&ws)
        .unwrap_err()
        .message
        .starts_with("cannot reach"));
    assert!(dir.join(".git").is_dir(), "the cache was kept");
    let _ = commits;
}

#[test]
fn offline_a_fetched_tag_comes_from_the_cache() {
    let (repo, commits) = tagged_repo();
    let ws = workspace(&repo.url(), "v1.0", false);
    run_step(&ws).unwrap();
    drop(repo);
    assert_eq!(fact(&ws).unwrap(), commits[0]);
    assert_eq!(run_step(&ws).unwrap().0, commits[0]);
    assert!(ws.log_text().contains("using tag v1.0 from the cache"));
}

#[test]
fn credentials_never_appear_in_errors_or_logs() {
    // Nothing listens on port 9 of 127.0.0.1: the connection is refused at once.
    let url = "https://alice:hunter2-token@127.0.0.1:9/org/repo.git";
    let ws = workspace(url, "main", false);
    let spec = spec(&ws);
    assert_eq!(
        spec.repo,
        "https://${secret:repo.userinfo}@127.0.0.1:9/org/repo.git"
    );
    for err in [fact(&ws).unwrap_err(), run_step(&ws).unwrap_err()] {
        let all = format!("{err:?}");
        assert!(!all.contains("hunter2"), "{all}");
        assert!(
            all.contains("https://<redacted>@127.0.0.1:9/org/repo.git"),
            "{all}"
        );
    }
    let log = ws.log_text();
    // git's command line has the URL without its credentials (they go in its environment).
    assert!(log.contains("https://127.0.0.1:9/org/repo.git"), "{log}");
    assert!(!log.contains("hunter2"), "{log}");
}

#[test]
fn a_plan_without_the_url_credentials_is_refused_naming_step_and_secret() {
    let mut ws = workspace("https://bob:tok@127.0.0.1:9/x.git", "main", false);
    let spec = spec(&ws);
    // As a plan read back from JSON alone: the placeholder, no value.
    ws.plan.secrets = Default::default();
    let cx = ws.cx("git-clone", BTreeMap::new());
    for err in [
        run(&spec, &cx).unwrap_err(),
        facts(&spec, &cx, RefLookup::Cached).unwrap_err(),
    ] {
        assert!(
            err.message.contains("step git-clone:")
                && err.message.contains("secret `repo.userinfo`"),
            "{}",
            err.message
        );
        assert!(err.hint.unwrap().contains("plan again"));
        assert!(!ws.log_text().contains("${secret"), "{}", ws.log_text());
    }
}

#[test]
fn submodules_are_checked_out_when_asked() {
    let sub = TestRepo::new();
    sub.commit(&[("sub.txt", "from the submodule\n")], "sub");
    let top = TestRepo::new();
    top.commit(&[("top.txt", "top\n")], "top");
    top.git(&["submodule", "add", "-q", &sub.url(), "vendor/sub"]);
    top.git(&["commit", "-q", "-m", "add submodule"]);
    top.tag("with-sub");

    let ws = workspace(&top.url(), "with-sub", true);
    let (_, dir) = run_step(&ws).unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("vendor/sub/sub.txt")).unwrap(),
        "from the submodule\n"
    );
    // Dirt inside the submodule is cleaned too.
    fs::write(dir.join("vendor/sub/sub.txt"), "edited").unwrap();
    fs::write(dir.join("vendor/sub/new.txt"), "x").unwrap();
    run_step(&ws).unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("vendor/sub/sub.txt")).unwrap(),
        "from the submodule\n"
    );
    assert!(!dir.join("vendor/sub/new.txt").exists());

    let ws = workspace(&top.url(), "with-sub", false);
    let (_, dir) = run_step(&ws).unwrap();
    assert!(!dir.join("vendor/sub/sub.txt").exists());
}

#[test]
fn a_local_repository_is_its_canonical_path_whatever_path_names_it() {
    // CI's checkout and a developer's name the same fixtures repository through different
    // paths (`<checkout>/.fixtures/llama.cpp`, a symlink): one origin, so one clone is reused
    // instead of being deleted and cloned again as "another origin".
    let (repo, commits) = tagged_repo();
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("linked");
    std::os::unix::fs::symlink(repo.path(), &link).unwrap();
    let ws = workspace(&link.to_string_lossy(), "v1.0", false);
    let (commit, dir) = run_step(&ws).unwrap();
    assert_eq!(commit, commits[0]);
    let canonical = fs::canonicalize(repo.path()).unwrap();
    assert_eq!(
        git(&dir, &["config", "--get", "remote.origin.url"]),
        canonical.to_string_lossy()
    );
    run_step(&ws).unwrap();
    let clones = ws
        .log_text()
        .lines()
        .filter(|l| l.starts_with("$ git ") && l.contains(" clone "))
        .count();
    assert_eq!(clones, 1, "{}", ws.log_text());
}
