//! The lock holds even when its file is removed or replaced while an apply holds it (issue 13,
//! "Orphans"): a second acquire is refused, naming the holder, as long as that holder lives, and
//! the holder notices at its next state write and writes nothing more.

use provision_executor::lock::lock_path;
use provision_executor::{acquire, LockError, State, StateError, StateFile};

#[test]
fn a_removed_lock_file_lets_no_second_apply_in_while_the_holder_lives() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let first = acquire(&state, false).unwrap();
    std::fs::remove_file(lock_path(&state)).unwrap();

    let err = acquire(&state, false).unwrap_err();
    assert!(matches!(err, LockError::Held { .. }), "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains(&format!("pid {}", std::process::id())),
        "{shown}"
    );
    assert!(shown.contains("removed"), "{shown}");
    assert!(shown.contains(&lock_path(&state).display().to_string()));

    // Once the holder is done, the lock is free again.
    drop(first);
    drop(acquire(&state, false).unwrap());
}

#[test]
fn a_replaced_lock_file_lets_no_second_apply_in_either() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let _first = acquire(&state, false).unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, "").unwrap();
    std::fs::rename(&other, lock_path(&state)).unwrap();
    let err = acquire(&state, false).unwrap_err();
    assert!(matches!(err, LockError::Held { .. }), "{err}");
}

#[test]
fn the_holder_of_a_removed_lock_file_writes_no_more_state() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path().join("state.json"));
    let lock = acquire(&file.path, false).unwrap();
    let file = file.held_by(&lock);
    file.save(&State::default()).unwrap();
    assert!(file.check_held().is_ok());

    std::fs::remove_file(&lock.path).unwrap();
    std::fs::remove_file(&file.path).unwrap();
    let err = file.save(&State::default()).unwrap_err();
    assert!(matches!(err, StateError::LockLost(_)), "{err}");
    let shown = err.to_string();
    assert!(shown.contains(&lock.path.display().to_string()), "{shown}");
    assert!(shown.contains("removed or replaced"), "{shown}");
    assert!(!file.path.exists(), "nothing was written");
    assert!(file.clone().check_held().is_err(), "clones share the lock");
}
