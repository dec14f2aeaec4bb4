//! Where a pool's model is: on this machine (for the memory estimate), and in the cluster (a
//! volume mounted at `/models`, maybe filled by an init container).

use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, HostPathVolumeSource,
    PersistentVolumeClaimVolumeSource, Volume, VolumeMount,
};
use provision_plan::model_ref::ModelRef;
use provision_plan::redact::{redact_url, url_secrets};
use provision_plan::split_name::SplitName;
use provision_plan::PoolInput;
use provision_steps_model::hf::{HfEnv, HfFile};

use crate::error::ExportError;
use crate::options::{ExportOptions, ModelVolume};

/// Where the model volume is mounted in the pod.
pub const MOUNT: &str = "/models";
/// The name of the model volume.
pub const VOLUME: &str = "models";
/// The name of the init container that downloads the model.
pub const DOWNLOADER: &str = "model-download";
/// Where `hf:` refs are downloaded from in the cluster.
pub const HF_ENDPOINT: &str = "https://huggingface.co";

/// Finds a pool's model file on this machine, without any network I/O.
pub trait ModelLookup {
    fn local_path(&self, input: &PoolInput) -> Option<PathBuf>;
}

/// Looks nowhere: no memory requests (deterministic output in tests).
pub struct NoModels;

impl ModelLookup for NoModels {
    fn local_path(&self, _: &PoolInput) -> Option<PathBuf> {
        None
    }
}

/// Looks where `provision apply` puts or finds models: paths relative to the config's
/// directory, bare names in `model.cache_dir` (default `<cache>/models`), `hf:` refs in the
/// Hugging Face cache (a revision already resolved there), URLs in `<models>/by-url/`.
pub struct LocalModels {
    pub config_dir: PathBuf,
    /// provision's cache root (`--cache-dir`).
    pub cache_dir: PathBuf,
    /// The Hugging Face hub cache (`HF_HUB_CACHE`, …).
    pub hf_hub_cache: PathBuf,
}

impl ModelLookup for LocalModels {
    fn local_path(&self, input: &PoolInput) -> Option<PathBuf> {
        let (_, source) = input.model_ref.as_ref()?;
        let models = input
            .pool
            .provisioning
            .model
            .as_ref()
            .and_then(|m| m.cache_dir.as_deref())
            .map(|d| self.config_dir.join(d))
            .unwrap_or_else(|| self.cache_dir.join("models"));
        let path = match source {
            ModelRef::Path { path } => match path.strip_prefix("~/") {
                Some(rest) => PathBuf::from(std::env::var_os("HOME")?).join(rest),
                None => self.config_dir.join(path),
            },
            ModelRef::Cached { name } => models.join(name),
            ModelRef::Hf {
                repo,
                file,
                revision,
            } => {
                let env = HfEnv {
                    endpoint: HF_ENDPOINT.into(),
                    token: None,
                    hub_cache: self.hf_hub_cache.clone(),
                };
                let f = HfFile::new(repo, file, revision).ok()?;
                f.snapshot(&env, &f.cached_commit(&env)?)
            }
            ModelRef::Url { url } => provision_steps_model::resolve::url_dest(url, &models),
            ModelRef::HfQuant { .. } => return None,
        };
        path.is_file().then_some(path)
    }
}

/// The model in the pod: its volume, its path, and the init container filling the volume.
pub struct Placement {
    pub volume: Volume,
    /// The model file as llama-server opens it (`--model`).
    pub path: String,
    /// The claim the volume mounts (pvc).
    pub claim: Option<String>,
    pub downloader: Option<Container>,
    /// Something the user has to do for the pod to start.
    pub note: Option<String>,
}

/// Where a ref can be downloaded from inside the cluster.
pub fn download_url(source: &ModelRef) -> Option<String> {
    match source {
        ModelRef::Hf {
            repo,
            file,
            revision,
        } => {
            let env = HfEnv {
                endpoint: HF_ENDPOINT.into(),
                token: None,
                hub_cache: PathBuf::new(),
            };
            Some(HfFile::new(repo, file, revision).ok()?.url(&env, revision))
        }
        ModelRef::Url { url } => Some(url.clone()),
        ModelRef::Path { .. } | ModelRef::Cached { .. } | ModelRef::HfQuant { .. } => None,
    }
}

/// The init container's script (POSIX sh; the server image has curl and sha256sum). It
/// reads `MODEL_URL`, `MODEL_FILE`, `MODEL_SHA256` (hex, or empty: not verified) and
/// `HF_TOKEN` (optional) from its environment, so nothing from the config is interpolated into
/// shell code. It prints the URL without userinfo and query (which may hold credentials). A file already there is kept when its recorded digest matches the configured one
/// (a claim keeps it across restarts); a download goes to a per-pod temporary name, is verified,
/// and only then renamed into place, so a replica never sees a partial or unverified model.
pub const DOWNLOAD_SCRIPT: &str = r#"set -eu
dest="$MODEL_DIR/$MODEL_FILE"
if [ -f "$dest" ] && { [ -z "$MODEL_SHA256" ] || [ "$(cat "$dest.sha256" 2>/dev/null)" = "$MODEL_SHA256" ]; }; then
  echo "model present: $dest"
  exit 0
fi
part="$dest.part.${HOSTNAME:-$$}"
shown="$(printf '%s\n' "$MODEL_URL" | sed -e 's|^\([^:/?#]*://\)[^/?#]*@|\1|' -e 's|[?#].*||')"
if [ -n "${HF_TOKEN:-}" ]; then set -- -H "Authorization: Bearer $HF_TOKEN"; else set --; fi
echo "downloading $shown"
curl -fsSL --retry 5 --retry-delay 5 -o "$part" "$@" "$MODEL_URL"
actual="$(sha256sum "$part" | cut -d' ' -f1)"
if [ -n "$MODEL_SHA256" ] && [ "$actual" != "$MODEL_SHA256" ]; then
  rm -f "$part"
  echo "checksum mismatch for $shown: expected sha256:$MODEL_SHA256, got sha256:$actual" >&2
  exit 1
fi
mv "$part" "$dest"
printf '%s\n' "$actual" > "$dest.sha256"
echo "model ready: $dest (sha256:$actual)"
"#;

/// Whether a model ref is a URL holding credentials (userinfo, signed query parameters): then
/// the cluster reads it as `MODEL_URL` from the pool's Secret, never from the manifest.
pub fn url_is_secret(source: &ModelRef) -> bool {
    matches!(source, ModelRef::Url { url } if !url_secrets(url).is_empty())
}

/// How the model gets into the pods of a pool; `url_from_secret` is `MODEL_URL` from the
/// pool's Secret when the URL holds credentials.
pub fn place(
    input: &PoolInput,
    name: &str,
    image: &str,
    hf_token: Option<EnvVar>,
    url_from_secret: Option<EnvVar>,
    opts: &ExportOptions,
    config_dir: &Path,
) -> Result<Placement, ExportError> {
    let pool = &input.pool.id;
    let (text, source) = input
        .model_ref
        .as_ref()
        .expect("pools with a model ref only");
    let text = &redact_url(text);
    if let ModelRef::HfQuant { repo, .. } = source {
        return Err(ExportError::usage(
            format!("pool `{pool}`: the model `{text}` names a quant, not a file, and the pod's downloader fetches one named file"),
            format!("name the file in the ref (`hf:{repo}/FILE.gguf`): `provision inspect {text}` resolves it"),
        ));
    }
    let file = source.file_name().to_string();
    if let Some(split) = SplitName::parse(&file).filter(|_| download_url(source).is_some()) {
        return Err(ExportError::usage(
            format!("pool `{pool}`: the model `{text}` is split in {} shards, and the pod's downloader fetches one file", split.count),
            "put the shards on a claim (`--model-volume pvc` with a path ref) or a node directory (`--model-volume host-path`), all beside the first",
        ));
    }
    let url = download_url(source);
    let downloader = |url: &str| Container {
        name: DOWNLOADER.into(),
        image: Some(image.to_string()),
        command: Some(vec!["/bin/sh".into(), "-c".into(), DOWNLOAD_SCRIPT.into()]),
        env: Some(
            [
                env("MODEL_DIR", MOUNT),
                env("MODEL_FILE", &file),
                env(
                    "MODEL_SHA256",
                    input
                        .checksum
                        .as_deref()
                        .and_then(|c| c.strip_prefix("sha256:"))
                        .unwrap_or(""),
                ),
                url_from_secret
                    .clone()
                    .unwrap_or_else(|| env("MODEL_URL", url)),
            ]
            .into_iter()
            .chain(hf_token.clone())
            .collect(),
        ),
        volume_mounts: Some(vec![VolumeMount {
            name: VOLUME.into(),
            mount_path: MOUNT.into(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let path = format!("{MOUNT}/{file}");
    match opts.model_volume {
        ModelVolume::Pvc => {
            let claim = opts
                .model_claim
                .clone()
                .unwrap_or_else(|| format!("{name}-models"));
            let note = url.is_none().then(|| {
                format!("pool `{pool}`: the model `{text}` is a local file: copy it onto the claim `{claim}` as `{file}` before the pods can start (see the README)")
            });
            Ok(Placement {
                volume: Volume {
                    name: VOLUME.into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.clone(),
                        read_only: None,
                    }),
                    ..Default::default()
                },
                path,
                downloader: url.as_deref().map(downloader),
                claim: Some(claim),
                note,
            })
        }
        ModelVolume::Download => {
            let Some(url) = url else {
                return Err(ExportError::usage(
                    format!("pool `{pool}`: the model `{text}` is a local file, which the cluster cannot download"),
                    "use `--model-volume pvc` (and copy the file onto the claim) or `--model-volume host-path`",
                ));
            };
            Ok(Placement {
                volume: Volume {
                    name: VOLUME.into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Default::default()
                },
                path,
                downloader: Some(downloader(&url)),
                claim: None,
                note: None,
            })
        }
        ModelVolume::HostPath => Ok(Placement {
            volume: host_path(pool, text, source, opts, config_dir)?,
            path,
            downloader: None,
            claim: None,
            note: None,
        }),
    }
}

/// The node directory holding the model (`--model-dir`, or a path ref's directory), as a
/// read-only `hostPath` volume.
fn host_path(
    pool: &str,
    text: &str,
    source: &ModelRef,
    opts: &ExportOptions,
    config_dir: &Path,
) -> Result<Volume, ExportError> {
    let dir = match (&opts.model_dir, source) {
        (Some(dir), _) => PathBuf::from(dir),
        (None, ModelRef::Path { path }) if !path.starts_with("~/") => {
            let full = normalize(&config_dir.join(path));
            full.parent().map(Path::to_path_buf).unwrap_or_default()
        }
        _ => {
            return Err(ExportError::usage(
                format!("pool `{pool}`: the model `{text}` is not a file path, so the node directory holding it is unknown"),
                "pass `--model-dir DIR`: the directory on the node that holds the model file",
            ))
        }
    };
    let dir = normalize(&dir);
    if !dir.is_absolute() {
        return Err(ExportError::usage(
            format!(
                "pool `{pool}`: the model directory `{}` is not an absolute path",
                dir.display()
            ),
            "pass `--model-dir` with an absolute path on the node",
        ));
    }
    Ok(Volume {
        name: VOLUME.into(),
        host_path: Some(HostPathVolumeSource {
            path: dir.display().to_string(),
            type_: Some("Directory".into()),
        }),
        ..Default::default()
    })
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// `a/./b/../c` → `a/c`, without touching the file system (Kubernetes rejects `..` in a
/// hostPath).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let hf = ModelRef::parse("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/sub dir/q4.gguf@v1").unwrap();
        assert_eq!(
            download_url(&hf).unwrap(),
            "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/v1/sub%20dir/q4.gguf"
        );
        let local = ModelRef::parse("./m.gguf").unwrap();
        assert_eq!(download_url(&local), None);
    }

    #[test]
    fn normalizes_lexically() {
        assert_eq!(
            normalize(Path::new("/a/b/../../c/./d.gguf")),
            PathBuf::from("/c/d.gguf")
        );
    }
}
