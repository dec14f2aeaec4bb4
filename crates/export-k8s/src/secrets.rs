//! Secrets never appear in a manifest: a secret flag (`--api-key`, `--hf-token`) is dropped
//! from `args` and its value read by llama-server from the environment variable it honours,
//! which comes from a Kubernetes Secret; so does every `env` entry whose name looks secret
//! (`*TOKEN*`, `*KEY*`, `*SECRET*`, `*PASS*`, `*AUTH*`, `*CREDENTIAL*`, or listed in the pool's
//! `secret_env` — the same rule, `provision_plan::redact`, that redacts them everywhere).
//! The Secret itself is not written: `kubectl apply` of an empty one would wipe the real one.
//! A pool serving `listen.tls` mounts its certificate and key from a TLS Secret the same way.

use k8s_openapi::api::core::v1::{SecretVolumeSource, Volume, VolumeMount};
use provision_plan::llama_flags::Flag;

/// The volume holding a pool's TLS Secret (`listen.tls`): a `kubernetes.io/tls` Secret, whose
/// `tls.crt` and `tls.key` llama-server reads from [`TLS_MOUNT`].
pub const TLS_VOLUME: &str = "tls";
/// Where the TLS Secret is mounted in the server's container.
pub const TLS_MOUNT: &str = "/etc/llama-server/tls";

/// The TLS Secret's volume: only its owner may read the files (0400).
pub fn tls_volume(secret: &str) -> Volume {
    Volume {
        name: TLS_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The TLS Secret mounted read-only.
pub fn tls_mount() -> VolumeMount {
    VolumeMount {
        name: TLS_VOLUME.into(),
        mount_path: TLS_MOUNT.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// The mounted Secret's certificate and key files, which the server's TLS flags name.
pub fn tls_files() -> provision_plan::step::TlsFiles {
    provision_plan::step::TlsFiles {
        cert_file: format!("{TLS_MOUNT}/tls.crt"),
        key_file: format!("{TLS_MOUNT}/tls.key"),
    }
}

/// The environment variable that carries a secret flag's value, if llama-server has one.
pub use provision_plan::llama_flags::secret_flag_env as flag_env;

pub use provision_plan::redact::is_secret_env;

/// Split normalised flags into the non-secret ones (for `args`) and the Secret keys (env
/// names) of the secret ones. A secret flag llama-server reads from no variable is an error:
/// it could only be passed inline.
pub fn split_flags(flags: &[Flag]) -> Result<(Vec<Flag>, Vec<&'static str>), String> {
    let mut args = Vec::new();
    let mut keys = Vec::new();
    for f in flags {
        if !f.secret {
            args.push(f.clone());
            continue;
        }
        match flag_env(&f.name) {
            Some(env) => keys.push(env),
            None => {
                return Err(format!(
                    "`{}` is secret and llama-server reads it from no environment variable",
                    f.name
                ))
            }
        }
    }
    Ok((args, keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(name: &str, value: &str, secret: bool) -> Flag {
        Flag {
            name: name.into(),
            value: Some(value.into()),
            secret,
        }
    }

    #[test]
    fn secret_flags_leave_args() {
        let (args, keys) = split_flags(&[
            flag("--parallel", "4", false),
            flag("--api-key", "sk-x", true),
            flag("--hf-token", "hf_x", true),
        ])
        .unwrap();
        assert_eq!(args, vec![flag("--parallel", "4", false)]);
        assert_eq!(keys, vec!["LLAMA_API_KEY", "HF_TOKEN"]);
        assert!(split_flags(&[flag("--other-secret", "x", true)]).is_err());
    }

    #[test]
    fn secret_env_names() {
        for k in [
            "HF_TOKEN",
            "OPENAI_API_KEY",
            "db_password",
            "MY_SECRET_X",
            "AWS_KEY",
        ] {
            assert!(is_secret_env(k, &[]), "{k}");
        }
        for k in ["LLAMA_LOG_COLORS", "PATH"] {
            assert!(!is_secret_env(k, &[]), "{k}");
        }
        assert!(is_secret_env("DB_URL", &["DB_URL".to_string()]));
    }
}
