//! Whose file is at a handoff path. provision replaces or removes only its own handoff files:
//! a file marked `"written_by": "provision"` by the same runtime directory and state file (its
//! runtime id, see [`crate::identity::runtime_id`]) for the same pool and replica (or, for `down`, one whose content still has the digest recorded when it was
//! written). Anything else there (a config, a symlink, another project's handoff, a file edited
//! since) is left alone, and the caller says so.

use std::io::Read;
use std::path::Path;

use provision_executor::private_file;
use provision_executor::StepContext;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The marker in every handoff file provision writes.
pub const WRITTEN_BY: &str = "provision";

/// The largest file read to decide whose it is (a handoff is a few hundred bytes).
const MAX_READ: u64 = 1 << 20;

/// The handoff a step may replace or remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The runtime directory of the provision that writes it (absolute); `None`: any.
    pub runtime_dir: Option<String>,
    /// Its runtime id (runtime directory and state file); `None`: any. A file without one
    /// (written before it was recorded) is judged by the runtime directory alone.
    pub runtime_id: Option<String>,
    pub pool: String,
    pub replica: u32,
}

impl Owner {
    pub fn of(cx: &StepContext<'_>, pool: &str, replica: u32) -> Owner {
        Owner {
            runtime_dir: Some(cx.roots.runtime.clone()),
            runtime_id: Some(crate::identity::runtime_id(&cx.roots.runtime)),
            pool: pool.to_string(),
            replica,
        }
    }
}

/// What is at a handoff path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Absent,
    /// A handoff of this owner: provision may replace or remove it.
    Ours,
    /// Something else, and why it is not ours.
    NotOurs(String),
}

/// What a removal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Removed,
    Absent,
    /// Left in place: not provision's file (any more), and why.
    Kept(String),
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// The content at `path`: `Ok(None)` when nothing is there, `Err(why)` when it is not a
/// regular file provision could have written (a link, a directory, too large, unreadable).
fn content(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let file = match private_file::open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut bytes = Vec::new();
    file.take(MAX_READ + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_READ {
        return Err("it is larger than any handoff file".into());
    }
    Ok(Some(bytes))
}

/// Whose file is at `path`.
pub fn inspect(path: &Path, owner: &Owner) -> Found {
    match content(path) {
        Ok(None) => Found::Absent,
        Ok(Some(bytes)) => match judge(&bytes, owner) {
            Ok(()) => Found::Ours,
            Err(why) => Found::NotOurs(why),
        },
        Err(why) => Found::NotOurs(why),
    }
}

fn judge(bytes: &[u8], owner: &Owner) -> Result<(), String> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|_| "it is not a provision handoff (not JSON)".to_string())?;
    let field = |k: &str| value.get(k).and_then(Value::as_str);
    let replica = format!("r{}", owner.replica);
    match field("written_by") {
        Some(WRITTEN_BY) => {}
        // A handoff written before the marker existed: every field of one, same replica.
        None if legacy(&value) => {}
        _ => {
            return Err("it is not a provision handoff (no `\"written_by\": \"provision\"`)".into())
        }
    }
    if let (Some(mine), Some(dir)) = (&owner.runtime_dir, field("runtime_dir")) {
        if dir != mine {
            return Err(format!(
                "it is the handoff of another provision, whose runtime directory is {dir}"
            ));
        }
    }
    if let (Some(mine), Some(id)) = (&owner.runtime_id, field("runtime_id")) {
        if id != mine {
            return Err(format!(
                "it is the handoff of another provision state sharing this runtime directory \
                 (runtime id {id}, this one {mine})"
            ));
        }
    }
    if field("pool_id") != Some(owner.pool.as_str()) || field("replica_id") != Some(&replica) {
        return Err(format!(
            "it is the handoff of {}/{}, not of {}/{replica}",
            field("pool_id").unwrap_or("?"),
            field("replica_id").unwrap_or("?"),
            owner.pool
        ));
    }
    Ok(())
}

fn legacy(value: &Value) -> bool {
    [
        "handoff_version",
        "engine",
        "url",
        "pool_id",
        "replica_id",
        "written_at",
    ]
    .iter()
    .all(|k| value.get(k).is_some())
}

fn remove(path: &Path) -> Result<Removal, String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(Removal::Removed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Removal::Absent),
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}

/// Remove the handoff at `path` if it is `owner`'s.
pub fn remove_if_ours(path: &Path, owner: &Owner) -> Result<Removal, String> {
    match inspect(path, owner) {
        Found::Absent => Ok(Removal::Absent),
        Found::Ours => remove(path),
        Found::NotOurs(why) => Ok(Removal::Kept(why)),
    }
}

/// How many entries of a handoff directory are looked at when a server is stopped by its marker.
const MAX_SCAN: usize = 10_000;

/// Remove the handoff files directly in `dir` that `owner` wrote for the server `pid` (their
/// `pid` field names it): the handoffs of a server found by its marker after its state file was
/// lost, so that none keeps naming a stopped server's URL. A link, a file of someone else's, or
/// a handoff of another pid, replica or runtime directory is left alone. At most the first
/// 10,000 entries are looked at. Returns each removed path, or why it could not be removed.
pub fn remove_handoffs_of(dir: &Path, owner: &Owner, pid: u32) -> Vec<Result<String, String>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.take(MAX_SCAN).flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(Some(bytes)) = content(&path) else {
            continue;
        };
        let names_pid = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("pid").and_then(Value::as_u64))
            == Some(u64::from(pid));
        if !names_pid || judge(&bytes, owner).is_err() {
            continue;
        }
        match remove(&path) {
            Ok(Removal::Removed) => out.push(Ok(path.display().to_string())),
            Ok(_) => {}
            Err(e) => out.push(Err(e)),
        }
    }
    out
}

/// Remove the file at `path` if its content still has the digest recorded when provision wrote
/// it.
pub fn remove_if_unchanged(path: &Path, digest: &str) -> Result<Removal, String> {
    match content(path) {
        Ok(None) => Ok(Removal::Absent),
        Ok(Some(bytes)) if sha256(&bytes) == digest => remove(path),
        Ok(Some(_)) => Ok(Removal::Kept(
            "its content changed since provision wrote it".into(),
        )),
        Err(why) => Ok(Removal::Kept(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            runtime_dir: Some("/rt".into()),
            runtime_id: Some("00aa".into()),
            pool: "p".into(),
            replica: 0,
        }
    }

    #[test]
    fn only_a_marked_handoff_of_the_same_runtime_pool_and_replica_is_ours() {
        let ours =
            r#"{"written_by":"provision","runtime_dir":"/rt","pool_id":"p","replica_id":"r0"}"#;
        assert_eq!(judge(ours.as_bytes(), &owner()), Ok(()));
        let same_state = r#"{"written_by":"provision","runtime_dir":"/rt","runtime_id":"00aa","pool_id":"p","replica_id":"r0"}"#;
        assert_eq!(judge(same_state.as_bytes(), &owner()), Ok(()));
        let legacy = r#"{"handoff_version":1,"engine":"llamacpp","url":"u","pool_id":"p","replica_id":"r0","written_at":"t"}"#;
        assert_eq!(judge(legacy.as_bytes(), &owner()), Ok(()));
        for (text, why) in [
            ("pools: []", "not JSON"),
            (r#"{"pool_id":"p","replica_id":"r0"}"#, "written_by"),
            (
                r#"{"written_by":"provision","runtime_dir":"/x","pool_id":"p","replica_id":"r0"}"#,
                "runtime directory is /x",
            ),
            (
                r#"{"written_by":"provision","runtime_dir":"/rt","pool_id":"p","replica_id":"r1"}"#,
                "p/r1",
            ),
            (
                r#"{"written_by":"provision","runtime_dir":"/rt","runtime_id":"11bb","pool_id":"p","replica_id":"r0"}"#,
                "another provision state sharing this runtime directory (runtime id 11bb",
            ),
        ] {
            let err = judge(text.as_bytes(), &owner()).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn removal_needs_the_recorded_digest_or_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.json");
        std::fs::write(&p, "x").unwrap();
        assert!(matches!(
            remove_if_unchanged(&p, &sha256(b"y")),
            Ok(Removal::Kept(_))
        ));
        assert!(matches!(remove_if_ours(&p, &owner()), Ok(Removal::Kept(_))));
        assert_eq!(remove_if_unchanged(&p, &sha256(b"x")), Ok(Removal::Removed));
        assert_eq!(remove_if_unchanged(&p, &sha256(b"x")), Ok(Removal::Absent));
    }
}
