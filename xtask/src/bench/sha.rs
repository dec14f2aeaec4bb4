//! Figure 6: sha256 verification throughput of provision's model digest
//! (`provision_steps_model::digest::sha256_file`) on one large file, beside `sha256sum` on the
//! same file in the same run (both from the page cache: a warm-up read comes first), and the
//! cached re-verify (`DigestCache::digest` of an unchanged file): bytes of the file read, by
//! provision's own count and by this process's `rchar` (every byte any read call returned).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use provision_executor::Cancel;
use provision_steps_model::digest::{sha256_file, DigestCache};

use super::stats::Samples;

pub struct Sha {
    pub bytes: u64,
    /// GB/s (10^9 bytes per second).
    pub provision_gbps: Samples,
    pub sha256sum_gbps: Samples,
    pub cached_ms: Samples,
    /// Bytes of the file read by the cached re-verifies, by provision's count.
    pub cached_bytes_read: u64,
    /// This process's `rchar` growth over one cached re-verify (the cache file itself).
    pub cached_rchar: u64,
}

/// A file of `bytes` pseudo-random bytes (kept for the next run when its size matches).
fn ensure_file(path: &Path, bytes: u64) -> Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == bytes) {
        return Ok(());
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for w in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn rchar() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("rchar: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

pub fn measure(dir: &Path, bytes: u64, reps: usize) -> Result<Sha> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join(format!("sha-{}m.bin", bytes >> 20));
    ensure_file(&file, bytes)?;
    let cancel = Cancel::new();
    let sha256sum = || -> Result<String> {
        let out = Command::new("sha256sum").arg(&file).output()?;
        ensure!(out.status.success(), "sha256sum failed");
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string())
    };
    // Warm-up: into the page cache, and the two must agree.
    let ours = sha256_file(&file, &cancel)?;
    let theirs = sha256sum()?;
    ensure!(
        ours == format!("sha256:{theirs}"),
        "digests differ: provision {ours}, sha256sum {theirs}"
    );
    let gbps = |t: Instant| bytes as f64 / t.elapsed().as_secs_f64() / 1e9;
    let mut s = Sha {
        bytes,
        provision_gbps: Samples::default(),
        sha256sum_gbps: Samples::default(),
        cached_ms: Samples::default(),
        cached_bytes_read: 0,
        cached_rchar: 0,
    };
    for _ in 0..reps {
        let t = Instant::now();
        sha256_file(&file, &cancel)?;
        s.provision_gbps.push(gbps(t));
        let t = Instant::now();
        sha256sum()?;
        s.sha256sum_gbps.push(gbps(t));
    }

    let cache = DigestCache::new(dir.join("digests.json"));
    let _ = std::fs::remove_file(cache.file());
    let first = cache.digest(&file, &cancel).context("first verify")?;
    ensure!(
        first.bytes_read == bytes,
        "the first verify read {} bytes",
        first.bytes_read
    );
    ensure!(first.digest == ours, "the cached verify's digest differs");
    for _ in 0..reps {
        let before = rchar();
        let t = Instant::now();
        let again = cache.digest(&file, &cancel)?;
        s.cached_ms.push(t.elapsed().as_secs_f64() * 1e3);
        s.cached_rchar = rchar().saturating_sub(before);
        ensure!(again.digest == ours, "the cached digest differs");
        s.cached_bytes_read += again.bytes_read;
    }
    Ok(s)
}
