//! Resumable, verified, exclusive downloads: `<dest>.incomplete` grows with HTTP Range requests
//! across interruptions and applies, and becomes `<dest>` only when it is complete and its
//! digest matches. A lock on `<dest>.lock` makes a second resolve of the same file wait for the
//! first instead of downloading it too. A download whose digest is wrong is kept aside as
//! `<dest>.bad` for inspection, never renamed into place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use provision_executor::Cancel;
use sha2::{Digest, Sha256};

use crate::digest::finish;
use crate::http::{display_url, header, Http};

/// Tries (the first request and resumes after a cut or a 5xx) before a download fails.
pub const ATTEMPTS: u32 = 4;

/// What to fetch and what it must be.
#[derive(Debug, Clone)]
pub struct Download<'a> {
    pub url: &'a str,
    pub dest: &'a Path,
    pub expected_size: Option<u64>,
    /// `sha256:<hex>` the file must have.
    pub expected_digest: Option<&'a str>,
    /// Where the expectation comes from, for the error (`the config's checksum`).
    pub digest_source: &'a str,
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub digest: String,
    pub size: u64,
    /// Bytes fetched over the network by this call (0 when another process had finished it).
    pub fetched: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{0}")]
    Http(#[from] crate::http::HttpError),
    #[error("{url} answered {status}{detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("the download of {url} was interrupted at {have} of {total} bytes {attempts} times: {detail}")]
    Interrupted {
        url: String,
        have: u64,
        total: String,
        attempts: u32,
        detail: String,
    },
    #[error("{url} sent {actual} bytes, expected {expected}")]
    WrongSize {
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error("checksum mismatch for {url}: expected {expected} ({source_of}), got {actual}; the download is kept aside at {}", kept.display())]
    Mismatch {
        url: String,
        expected: String,
        actual: String,
        source_of: String,
        kept: PathBuf,
    },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cancelled")]
    Cancelled,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DownloadError + 'a {
    move |source| DownloadError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Take the exclusive lock on `<dest>.lock`, polling `cancel` while another process holds it.
pub fn lock_for(dest: &Path, cancel: &Cancel) -> Result<File, DownloadError> {
    let path = with_suffix(dest, ".lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("cannot create the lock file", &path))?;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(fs::TryLockError::WouldBlock) => {
                if cancel.is_cancelled() {
                    return Err(DownloadError::Cancelled);
                }
                thread::sleep(Duration::from_millis(50));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(io_err("cannot lock", &path)(e));
            }
        }
    }
}

/// Download `d.url` to `d.dest` (see the module docs). `progress` gets human lines.
pub fn download(
    http: &Http,
    d: &Download<'_>,
    cancel: &Cancel,
    progress: &mut dyn FnMut(String),
) -> Result<Downloaded, DownloadError> {
    if let Some(dir) = d.dest.parent() {
        fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    }
    let _lock = lock_for(d.dest, cancel)?;
    if d.dest.exists() {
        // Another resolve finished it while we waited; the caller verifies it.
        return Ok(Downloaded {
            digest: String::new(),
            size: fs::metadata(d.dest).map(|m| m.len()).unwrap_or(0),
            fetched: 0,
        });
    }
    let mut part = Partial::open(with_suffix(d.dest, ".incomplete"))?;
    if d.expected_size.is_some_and(|size| part.have > size) {
        part.restart()?;
    }
    if part.have > 0 {
        progress(format!(
            "resuming {} at byte {}",
            display_url(d.url),
            part.have
        ));
    }
    let fetched = fetch(http, d, cancel, progress, &mut part)?;
    commit(d, part, fetched, progress)
}

/// The `.incomplete` file a download goes into, and the hash of what it holds.
struct Partial {
    path: PathBuf,
    file: File,
    hasher: Sha256,
    /// The bytes in the file.
    have: u64,
}

impl Partial {
    /// Open `path`, hashing what an earlier attempt left, to go on from its end.
    fn open(path: PathBuf) -> Result<Self, DownloadError> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("cannot open", &path))?;
        let mut hasher = Sha256::new();
        let mut have = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(io_err("cannot read", &path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            have += n as u64;
        }
        Ok(Partial {
            path,
            file,
            hasher,
            have,
        })
    }

    /// Start over from an empty file.
    fn restart(&mut self) -> Result<(), DownloadError> {
        self.have = 0;
        self.hasher = Sha256::new();
        self.file
            .set_len(0)
            .map_err(io_err("cannot truncate", &self.path))
    }

    /// Append `body` until it ends, adding to `fetched` and reporting every 64 MiB (of
    /// `total`); inside `Ok`, why the body broke off, if it did.
    fn append(
        &mut self,
        body: &mut dyn Read,
        total: Option<u64>,
        fetched: &mut u64,
        cancel: &Cancel,
        progress: &mut dyn FnMut(String),
    ) -> Result<Result<(), String>, DownloadError> {
        let mut buf = vec![0u8; 1 << 20];
        let mut next_report = self.have + (64 << 20);
        loop {
            if cancel.is_cancelled() {
                self.file.flush().ok();
                return Err(DownloadError::Cancelled);
            }
            match body.read(&mut buf) {
                Ok(0) => return Ok(Ok(())),
                Ok(n) => {
                    self.file
                        .write_all(&buf[..n])
                        .map_err(io_err("cannot write", &self.path))?;
                    self.hasher.update(&buf[..n]);
                    self.have += n as u64;
                    *fetched += n as u64;
                    if self.have >= next_report {
                        next_report = self.have + (64 << 20);
                        let have = self.have;
                        progress(match total {
                            Some(t) => format!("downloaded {have} of {t} bytes"),
                            None => format!("downloaded {have} bytes"),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Ok(Err(e.to_string())),
            }
        }
    }
}

/// Fetch the rest of `d.url` into `part`, resuming where a request broke off (at most
/// [`ATTEMPTS`] requests); the bytes fetched.
fn fetch(
    http: &Http,
    d: &Download<'_>,
    cancel: &Cancel,
    progress: &mut dyn FnMut(String),
    part: &mut Partial,
) -> Result<u64, DownloadError> {
    let mut fetched = 0u64;
    let mut attempts = 0u32;
    let mut total = d.expected_size;
    let mut last_problem;
    loop {
        if cancel.is_cancelled() {
            return Err(DownloadError::Cancelled);
        }
        if total.is_some_and(|t| part.have == t) {
            break;
        }
        attempts += 1;
        let mut headers = Vec::new();
        if part.have > 0 {
            headers.push(("Range", format!("bytes={}-", part.have)));
        }
        let (mut resp, final_url) = http.request("GET", d.url, &headers, true)?;
        let status = resp.status().as_u16();
        match status {
            200 | 206 => {}
            416 if part.have > 0 => {
                // The partial file is not a prefix the server knows: start over.
                part.restart()?;
                if attempts >= ATTEMPTS {
                    last_problem = "the server refused every range".to_string();
                    return Err(interrupted(d.url, part.have, total, attempts, last_problem));
                }
                continue;
            }
            500..=599 if attempts < ATTEMPTS => {
                thread::sleep(Duration::from_millis(200 * u64::from(attempts)));
                continue;
            }
            _ => {
                let detail = match header(&resp, "x-error-message") {
                    Some(m) => format!(": {m}"),
                    None => String::new(),
                };
                return Err(DownloadError::Status {
                    url: display_url(&final_url),
                    status,
                    detail,
                });
            }
        }
        let length: Option<u64> = header(&resp, "content-length").and_then(|v| v.parse().ok());
        if status == 206 {
            let start = header(&resp, "content-range")
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if start != Some(part.have) {
                part.restart()?;
                continue;
            }
            if let Some(t) = header(&resp, "content-range")
                .and_then(|v| v.rsplit('/').next())
                .and_then(|v| v.parse::<u64>().ok())
            {
                total = total.or(Some(t));
            }
        } else {
            // A whole body: the server ignored the range (or there was none).
            if part.have > 0 {
                part.restart()?;
            }
            total = total.or(length);
        }
        part.file
            .seek(SeekFrom::Start(part.have))
            .map_err(io_err("cannot seek", &part.path))?;
        let body_end = length.map(|l| part.have + l);
        let mut reader = resp.body_mut().as_reader();
        let result = part.append(&mut reader, total, &mut fetched, cancel, progress)?;
        part.file
            .flush()
            .map_err(io_err("cannot write", &part.path))?;
        let have = part.have;
        let short = body_end.is_some_and(|end| have < end) || total.is_some_and(|t| have < t);
        match result {
            Ok(()) if !short => break,
            Ok(()) => last_problem = "the connection closed early".into(),
            Err(e) => last_problem = e,
        }
        progress(format!(
            "download interrupted at {have} bytes ({last_problem}); resuming"
        ));
        if attempts >= ATTEMPTS {
            return Err(interrupted(d.url, have, total, attempts, last_problem));
        }
    }
    Ok(fetched)
}

/// Check the finished file against the expected size and digest (a mismatch is set aside as
/// `.bad`) and move it into place.
fn commit(
    d: &Download<'_>,
    part: Partial,
    fetched: u64,
    progress: &mut dyn FnMut(String),
) -> Result<Downloaded, DownloadError> {
    let Partial {
        path: partial,
        file,
        hasher,
        have,
    } = part;
    file.sync_all().map_err(io_err("cannot sync", &partial))?;
    drop(file);
    if let Some(expected) = d.expected_size {
        if have != expected {
            let bad = with_suffix(d.dest, ".bad");
            fs::rename(&partial, &bad).ok();
            return Err(DownloadError::WrongSize {
                url: display_url(d.url),
                expected,
                actual: have,
            });
        }
    }
    let digest = finish(hasher);
    if let Some(expected) = d.expected_digest {
        if !expected.eq_ignore_ascii_case(&digest) {
            let bad = with_suffix(d.dest, ".bad");
            fs::rename(&partial, &bad).map_err(io_err("cannot move aside", &partial))?;
            return Err(DownloadError::Mismatch {
                url: display_url(d.url),
                expected: expected.to_ascii_lowercase(),
                actual: digest,
                source_of: d.digest_source.into(),
                kept: bad,
            });
        }
    }
    fs::rename(&partial, d.dest).map_err(io_err("cannot rename into place", &partial))?;
    progress(format!(
        "downloaded {} ({have} bytes, {digest})",
        display_url(d.url)
    ));
    Ok(Downloaded {
        digest,
        size: have,
        fetched,
    })
}

fn interrupted(
    url: &str,
    have: u64,
    total: Option<u64>,
    attempts: u32,
    detail: String,
) -> DownloadError {
    DownloadError::Interrupted {
        url: display_url(url),
        have,
        total: total.map_or("unknown".into(), |t| t.to_string()),
        attempts,
        detail,
    }
}
