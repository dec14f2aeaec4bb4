//! The headers of a whole model: one GGUF, or every shard of a split one.
//!
//! llama.cpp's `gguf-split` names the shards `<prefix>-00001-of-0000N.gguf` … and writes
//! `split.no` (0-based), `split.count` and, in the first, `split.tensors.count` into their
//! headers; llama-server is given the first shard and opens the others from beside it. Opening
//! the first shard here reads every shard's header and checks that the set is whole and is one
//! set; opening a later shard is refused (it names the first), as llama-server would fail on it.

use std::path::{Path, PathBuf};

use provision_plan::split_name::SplitName;

use crate::gguf::Gguf;
use crate::model_info::InspectError;

/// One file of a model and its header.
#[derive(Debug, Clone)]
pub struct Shard {
    pub path: PathBuf,
    pub header: Gguf,
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// The shards of the model at `path` (its first file), first first: one for a whole model.
/// Every header is read (no tensor data); a missing shard, a shard of another set, or a
/// header that disagrees with the names is an error that names the file and what to do.
pub fn open(path: &Path) -> Result<Vec<Shard>, InspectError> {
    let header = Gguf::open(path)?;
    let name = SplitName::parse(file_name(path));
    let count = header.get("split.count").and_then(|v| v.as_u64());
    let split = |message: String| InspectError::Split(message);
    let Some(name) = name else {
        if let Some(n) = count.filter(|&n| n > 1) {
            return Err(split(format!(
                "{} is one shard of a model split in {n} (its header's `split.count`), but its name lacks llama.cpp's `-00001-of-{n:05}.gguf`, by which llama-server finds the other shards: give the shards the names `gguf-split` gave them",
                path.display()
            )));
        }
        return Ok(vec![Shard {
            path: path.to_path_buf(),
            header,
        }]);
    };
    if name.index != 1 {
        return Err(split(format!(
            "{} is shard {} of {} of a split model: name its first shard, {} (llama-server opens the others from beside it)",
            path.display(),
            name.index,
            name.count,
            name.shard(1)
        )));
    }
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut shards = vec![Shard {
        path: path.to_path_buf(),
        header,
    }];
    check_shard(&shards[0], 1, name.count)?;
    for k in 2..=name.count {
        let p = dir.join(name.shard(k));
        if !p.is_file() {
            return Err(split(format!(
                "shard {k} of {} of {}, {}, is missing: every shard of a split model must be beside the first (fetch it, or use an `hf:` or `https://` ref of the first shard, which fetches them all)",
                name.count,
                path.display(),
                p.display()
            )));
        }
        let header = Gguf::open(&p).map_err(|e| split(format!("{}: {e}", p.display())))?;
        let shard = Shard { path: p, header };
        check_shard(&shard, k, name.count)?;
        shards.push(shard);
    }
    let expected = shards[0]
        .header
        .get("split.tensors.count")
        .and_then(|v| v.as_u64());
    let found: u64 = shards.iter().map(|s| s.header.tensors.len() as u64).sum();
    if expected != Some(found) {
        return Err(split(format!(
            "the {} shards of {} hold {found} tensors, and the first shard's `split.tensors.count` says {}: a shard is from another model or another split of it (download the shards again, all from one revision)",
            name.count,
            path.display(),
            expected.map_or("nothing".to_string(), |n| n.to_string())
        )));
    }
    Ok(shards)
}

/// Shard `k` (1-based) of `count` says so in its header.
fn check_shard(shard: &Shard, k: u32, count: u32) -> Result<(), InspectError> {
    let get = |key: &str| shard.header.get(key).and_then(|v| v.as_u64());
    let (no, n) = (get("split.no"), get("split.count"));
    if no != Some(u64::from(k - 1)) || n != Some(u64::from(count)) {
        let said = |v: Option<u64>| v.map_or("nothing".to_string(), |v| v.to_string());
        return Err(InspectError::Split(format!(
            "{} is named shard {k} of {count}, but its header says `split.no` {} (0-based) and `split.count` {}: it is not a shard of this set (download it again, or rename the files as `gguf-split` wrote them)",
            shard.path.display(),
            said(no),
            said(n)
        )));
    }
    Ok(())
}
