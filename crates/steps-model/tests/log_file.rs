//! The model step's log is provision's own file: appended 0600, never through a symbolic link
//! planted at its path (issue 13, finding 3).

use std::os::unix::fs::PermissionsExt;

use provision_steps_model::resolve::log_line;

#[test]
fn the_log_is_private_and_never_appended_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/steps/model.log");
    log_line(&log, "one");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\n");
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let target = dir.path().join("target");
    std::fs::write(&target, "keep").unwrap();
    let linked = dir.path().join("logs/steps/linked.log");
    std::os::unix::fs::symlink(&target, &linked).unwrap();
    log_line(&linked, "two");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
}
