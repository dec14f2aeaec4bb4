//! The handoff file is provision's own: it carries an owner marker, is written 0600, its digest
//! is recorded, and a file at the handoff path that provision did not write (a config, a
//! symlink, another project's handoff) is never replaced or removed by spawn, probe or handoff.
//! The step log is never appended to through a symlink.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{json_file, Pool, Rig};

#[test]
fn a_handoff_is_marked_private_and_its_digest_recorded() {
    let mut rig = Rig::new(&Pool::default());
    rig.up(0).unwrap();
    let h = rig.handoff_file(0);
    let body = json_file(&h);
    assert_eq!(body["written_by"], "provision", "{body}");
    assert_eq!(
        body["runtime_dir"],
        rig.ws.plan.roots.runtime.as_str(),
        "{body}"
    );
    for private in [h.clone(), rig.server_log(0), rig.ws.log.clone()] {
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}: {mode:o}", private.display());
    }
    let sha = rig.handed_off(0).sha256.expect("a digest");
    assert!(sha.starts_with("sha256:") && sha.len() == 71, "{sha}");
    // Written again over its own file: fine.
    rig.run("spawn:fake/r0").unwrap();
    rig.run("probe:fake/r0").unwrap();
    rig.run("handoff:fake/r0").unwrap();
    assert_eq!(json_file(&h)["written_by"], "provision");
}

#[test]
fn a_file_provision_did_not_write_at_the_handoff_path_is_kept() {
    let mut rig = Rig::new(&Pool {
        handoff_path: Some("cfg.yaml"),
        ..Pool::default()
    });
    let victim = rig.ws.dir.path().join("config/cfg.yaml");
    std::fs::create_dir_all(victim.parent().unwrap()).unwrap();
    std::fs::write(&victim, "pools: []\n").unwrap();
    // The spawn step refuses before starting a server the handoff step could never hand off.
    let err = rig.run("spawn:fake/r0").unwrap_err();
    assert!(
        err.message.contains(&victim.display().to_string())
            && err.message.contains("not a provision handoff")
            && err.message.contains("no server is started"),
        "{err:?}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "pools: []\n");

    // The file appears between spawn and handoff: the handoff step refuses too.
    std::fs::remove_file(&victim).unwrap();
    rig.run("spawn:fake/r0").unwrap();
    rig.run("probe:fake/r0").unwrap();
    std::fs::write(&victim, "pools: []\n").unwrap();
    let err = rig.run("handoff:fake/r0").unwrap_err();
    assert!(
        err.message.contains(&victim.display().to_string())
            && err.message.contains("not a provision handoff"),
        "{err:?}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "pools: []\n");

    // Another project's handoff (another runtime dir) at the same path: kept too.
    let theirs = r#"{"written_by": "provision", "runtime_dir": "/elsewhere/.runtime", "pool_id": "fake", "replica_id": "r0"}"#;
    std::fs::write(&victim, theirs).unwrap();
    let err = rig.run("spawn:fake/r0").unwrap_err();
    assert!(err.message.contains("/elsewhere/.runtime"), "{err:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), theirs);
}

#[test]
fn a_symlink_at_the_handoff_path_is_neither_followed_nor_replaced() {
    let mut rig = Rig::new(&Pool {
        handoff_path: Some("link.json"),
        ..Pool::default()
    });
    let target = rig.ws.dir.path().join("target.txt");
    std::fs::write(&target, "keep").unwrap();
    let link = rig.ws.dir.path().join("config/link.json");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(rig.up(0).is_err());
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
}

#[test]
fn the_step_log_is_not_appended_through_a_symlink() {
    let mut rig = Rig::new(&Pool::default());
    let target = rig.ws.dir.path().join("target.txt");
    std::fs::write(&target, "keep").unwrap();
    std::fs::create_dir_all(rig.ws.log.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&target, &rig.ws.log).unwrap();
    let _ = rig.up(0);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
}

#[test]
fn a_handoff_is_group_readable_only_when_the_config_says_so() {
    let mut rig = Rig::new(&Pool {
        group_readable: true,
        ..Default::default()
    });
    rig.up(0).unwrap();
    let h = rig.handoff_file(0);
    let mode = std::fs::metadata(&h).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640, "{}: {mode:o}", h.display());
    assert_eq!(json_file(&h)["written_by"], "provision");
    // Its server log and the step log stay private.
    for private in [rig.server_log(0), rig.ws.log.clone()] {
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}: {mode:o}", private.display());
    }
}
