//! The executor's own files: the lock is never taken over from a file that is not a provision
//! lock, nor through a symlink; state, lock and temp files are 0600 and never written through a
//! symlink; a state file that cannot be read as text (a directory, non-UTF-8, a symlink) is
//! unreadable, not an I/O failure; step logs are not appended through a symlink.

use std::os::unix::fs::PermissionsExt;

use provision_executor::command::StepCommand;
use provision_executor::lock::lock_path;
use provision_executor::state::{write_atomic, Durability};
use provision_executor::{acquire, Cancel, LockError, State, StateError, StateFile};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_lock_file_that_is_not_a_provision_lock_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("Cargo");
    std::fs::write(dir.path().join("Cargo.lock"), "version = 3\n").unwrap();
    let err = acquire(&state, false).unwrap_err();
    assert!(matches!(err, LockError::NotOurs { .. }), "{err}");
    assert!(err.to_string().contains("not a provision lock"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("Cargo.lock")).unwrap(),
        "version = 3\n"
    );
    // An empty file (a lock released by an earlier apply) is a lock file.
    std::fs::write(dir.path().join("Cargo.lock"), "").unwrap();
    drop(acquire(&state, false).unwrap());
}

#[test]
fn a_symlinked_lock_file_is_refused_and_its_target_kept() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let target = dir.path().join("target");
    let holder = r#"{"pid":999999,"host":"h","started_at":"t"}"#;
    std::fs::write(&target, holder).unwrap();
    std::os::unix::fs::symlink(&target, lock_path(&state)).unwrap();
    let err = acquire(&state, false).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), holder);
}

#[test]
fn state_lock_and_written_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("rt/state.json"));
    file.save(&State::default()).unwrap();
    assert_eq!(mode(&file.path), 0o600);
    let lock = acquire(&file.path, false).unwrap();
    assert_eq!(mode(&lock.path), 0o600);
    let other = dir.path().join("new/dir/h.json");
    write_atomic(&other, b"{}", Durability::NoSync).unwrap();
    assert_eq!(mode(&other), 0o600);
    assert_eq!(mode(&dir.path().join("new")), 0o700);
}

#[test]
fn a_temp_file_name_taken_by_a_symlink_is_not_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, "keep").unwrap();
    let path = dir.path().join("state.json");
    let tmp = dir
        .path()
        .join(format!(".state.json.tmp.{}", std::process::id()));
    std::os::unix::fs::symlink(&target, &tmp).unwrap();
    write_atomic(&path, b"{}", Durability::Fsync).unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}\n");
}

#[test]
fn a_state_that_is_not_text_is_unreadable_not_an_io_failure() {
    let dir = tempfile::tempdir().unwrap();
    let as_dir = dir.path().join("d/state.json");
    std::fs::create_dir_all(&as_dir).unwrap();
    let latin1 = dir.path().join("latin1.json");
    std::fs::write(&latin1, b"{\"state_version\": 1, \"x\": \"\xe9\"}").unwrap();
    let good = dir.path().join("good.json");
    StateFile::new(&good).save(&State::default()).unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    for p in [as_dir, latin1, link] {
        let err = StateFile::new(&p).load().unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{p:?}: {err}");
    }
    let err = StateFile::new(dir.path().join("d/state.json"))
        .load()
        .unwrap_err();
    assert!(err.to_string().contains("directory"), "{err}");
}

#[test]
fn a_step_log_is_not_appended_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, "keep").unwrap();
    let log = dir.path().join("step.log");
    std::os::unix::fs::symlink(&target, &log).unwrap();
    let result = StepCommand::new(["true"]).run_logged(&log, &Cancel::new());
    assert!(result.is_err());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    let fresh = dir.path().join("fresh.log");
    StepCommand::new(["true"])
        .run_logged(&fresh, &Cancel::new())
        .unwrap();
    assert_eq!(mode(&fresh), 0o600);
}

#[test]
fn an_orphan_record_is_private_and_not_written_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("s.log");
    let target = dir.path().join("target");
    std::fs::write(&target, "keep").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("s.log.token")).unwrap();
    provision_executor::orphans::register(&log).unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    let other = dir.path().join("t.log");
    provision_executor::orphans::register(&other).unwrap();
    assert_eq!(mode(&dir.path().join("t.log.token")), 0o600);
}

/// A lock whose recorded holder is gone (killed) can still be held for a moment by a process
/// it forked, between that fork and its exec (the descriptor is close-on-exec): the next apply
/// waits that moment out instead of refusing with "another apply holds the lock".
#[test]
fn a_lock_held_for_a_moment_after_its_holder_died_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let lock = lock_path(&state);
    // A holder that is gone: a pid that just exited.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let pid = dead.id();
    dead.wait().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let record = format!(
        "{{\"pid\":{pid},\"host\":\"{}\",\"started_at\":\"t\"}}",
        host.trim()
    );
    std::fs::write(&lock, record).unwrap();
    // Its inherited descriptor: another open file description, released 300 ms later.
    let inherited = std::fs::File::open(&lock).unwrap();
    inherited.lock().unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(inherited);
    });
    let taken = acquire(&state, false);
    releaser.join().unwrap();
    let taken = taken.expect("the lock is taken once the inherited descriptor is gone");
    assert!(taken.took_over.as_ref().is_some_and(|h| h.pid == pid));

    // A live holder is refused at once, as before.
    drop(taken);
    let live = std::fs::File::open(&lock).unwrap();
    live.lock().unwrap();
    std::fs::write(
        &lock,
        format!(
            "{{\"pid\":{},\"host\":\"{}\",\"started_at\":\"t\"}}",
            std::process::id(),
            host.trim()
        ),
    )
    .unwrap();
    let err = acquire(&state, false).unwrap_err();
    assert!(matches!(err, LockError::Held { .. }), "{err}");
}
