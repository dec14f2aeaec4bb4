//! `provision export kubernetes`: the pools as Kubernetes manifests, from the same validated
//! config and normalised flags as `plan` (see `provision-export-k8s`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use provision_export_k8s::{ExportError, ExportOptions, LocalModels, ModelVolume, OutputFormat};

use crate::args::{CacheDir, Loudness};
use crate::exit::Exit;

#[derive(Subcommand)]
pub enum Export {
    /// Kubernetes manifests: per pool a Deployment (replicas, GPUs, probes, the model volume)
    /// and a Service; Secrets are referenced, never written.
    Kubernetes(KubernetesArgs),
}

#[derive(Args)]
pub struct KubernetesArgs {
    /// The pool config (YAML or JSON, told apart by content).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Only this pool.
    #[arg(long, value_name = "ID")]
    pool: Option<String>,
    /// Write one file per pool (`<name>.yaml` or `.json`) into DIR instead of stdout.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Multi-document YAML, or one JSON `List` (`--json` is accepted as the older spelling
    /// of `--format json`).
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    format: Format,
    /// The older spelling of `--format json`.
    #[arg(long, hide = true, conflicts_with = "format")]
    json: bool,
    /// `metadata.namespace` of every object [default: none: kubectl's namespace].
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// The llama-server image of every pool [default: ghcr.io/ggml-org/llama.cpp:server-cuda
    /// for GPU pools, :server for CPU pools, with `-bNNNN` when the source ref is a release].
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// Where the model comes from: a PersistentVolumeClaim (downloaded onto it by an init
    /// container for hf:/https: refs), a node directory, or a per-pod download.
    #[arg(long, value_enum, default_value_t = Volume::Pvc)]
    model_volume: Volume,
    /// The claim holding the models [default: <pool>-models].
    #[arg(long, value_name = "NAME")]
    model_claim: Option<String>,
    /// Also write the claim, of this size (e.g. 20Gi).
    #[arg(long, value_name = "SIZE")]
    create_pvc: Option<String>,
    /// storageClassName of the claim written by --create-pvc.
    #[arg(long, value_name = "NAME", requires = "create_pvc")]
    storage_class: Option<String>,
    /// host-path: the node directory holding the model files [default: the directory of a
    /// path ref].
    #[arg(long, value_name = "DIR")]
    model_dir: Option<String>,
    /// maxSurge of the rolling update (0: no extra GPUs needed during an update).
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_surge: u32,
    /// The Secret holding secret flags and env values [default: <pool>-secrets].
    #[arg(long, value_name = "NAME")]
    secret: Option<String>,
    // Where `apply` caches models, to read their headers for memory requests.
    #[command(flatten)]
    cache: CacheDir,
    #[command(flatten)]
    loudness: Loudness,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Volume {
    Pvc,
    HostPath,
    Download,
}

pub fn run(cmd: Export) -> ExitCode {
    match cmd {
        Export::Kubernetes(args) => kubernetes(args),
    }
}

fn kubernetes(args: KubernetesArgs) -> ExitCode {
    args.loudness.init_tracing();
    let quiet = args.loudness.quiet();
    let valid = match provision_plan::load(&args.config) {
        Ok(v) => v,
        Err(e) => return crate::report(&e, crate::Format::Text),
    };
    if !valid.warnings.is_empty() && !quiet {
        eprintln!("{}", valid.render_warnings());
    }
    let config_dir = args
        .config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let config_dir = std::fs::canonicalize(config_dir).unwrap_or_else(|_| config_dir.to_path_buf());
    let models = LocalModels {
        config_dir: config_dir.clone(),
        cache_dir: args.cache.dir(),
        hf_hub_cache: provision_steps_model::hf::HfEnv::from_env().hub_cache,
    };
    let format = match args.format {
        _ if args.json => OutputFormat::Json,
        Format::Yaml => OutputFormat::Yaml,
        Format::Json => OutputFormat::Json,
    };
    let opts = ExportOptions {
        pool: args.pool,
        namespace: args.namespace,
        image: args.image,
        model_volume: match args.model_volume {
            Volume::Pvc => ModelVolume::Pvc,
            Volume::HostPath => ModelVolume::HostPath,
            Volume::Download => ModelVolume::Download,
        },
        model_claim: args.model_claim,
        create_pvc: args.create_pvc,
        storage_class: args.storage_class,
        model_dir: args.model_dir,
        max_surge: args.max_surge,
        secret: args.secret,
    };
    let export = match provision_export_k8s::export(&valid, &opts, &config_dir, &models) {
        Ok(e) => e,
        Err(ExportError::Config(e)) => return crate::report(&e, crate::Format::Text),
        Err(ExportError::Usage { message, help }) => {
            eprintln!("error: {message}");
            if let Some(help) = help {
                eprintln!("  hint: {help}");
            }
            return ExitCode::from(Exit::Invalid);
        }
    };
    for w in export.warnings.iter().filter(|_| !quiet) {
        eprintln!("warning: {w}");
    }
    for pool in export.pools.iter().filter(|_| !quiet) {
        if let Some((secret, keys)) = &pool.secret {
            let literals: Vec<String> = keys
                .iter()
                .map(|k| format!("--from-literal={k}=…"))
                .collect();
            eprintln!(
                "note: pool `{}` reads {} from the Secret `{secret}`; create it first: kubectl create secret generic {secret} {}",
                pool.pool,
                keys.join(", "),
                literals.join(" ")
            );
        }
    }
    for pool in &export.pools {
        if let Some(secret) = &pool.tls_secret {
            eprintln!(
                "note: pool `{}` serves TLS with the certificate and key of the TLS Secret `{secret}`; create it first: kubectl create secret tls {secret} --cert=CERT_FILE --key=KEY_FILE",
                pool.pool
            );
        }
    }
    let Some(dir) = args.out else {
        print!("{}", provision_export_k8s::render(&export, format));
        return ExitCode::from(Exit::Ok);
    };
    match write_files(&dir, &export, format, quiet) {
        Ok(()) => ExitCode::from(Exit::Ok),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(Exit::Unexpected)
        }
    }
}

/// One file per pool, each written whole (temp file, then rename).
fn write_files(
    dir: &Path,
    export: &provision_export_k8s::Export,
    format: OutputFormat,
    quiet: bool,
) -> std::io::Result<()> {
    let context = |what: &str, path: &Path, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| context("creating", dir, e))?;
    for pool in &export.pools {
        let path = dir.join(format!("{}.{}", pool.name, format.extension()));
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, provision_export_k8s::render_pool(pool, format))
            .map_err(|e| context("writing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| context("renaming to", &path, e))?;
        if !quiet {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
