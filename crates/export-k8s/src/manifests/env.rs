//! The server container's environment: the config's `env` (secret-looking names from the
//! pool's Secret), then the secret flags and the `api_key`, also from the Secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use provision_plan::llama_flags::Flag;
use provision_plan::redact::is_secret_env_value;
use provision_plan::PoolInput;

use crate::error::ExportError;
use crate::secrets::split_flags;

/// The environment of a pool's server, and the flags left for its args.
pub(super) struct Environment {
    /// The flags that stay in `args` (secret flags removed).
    pub(super) arg_flags: Vec<Flag>,
    /// The variables, by name.
    pub(super) vars: BTreeMap<String, EnvVar>,
    /// The keys the pool reads from its Secret, sorted.
    pub(super) secret_keys: Vec<String>,
}

impl Environment {
    /// The environment of `input`'s server, its secrets read from Secret `secret_name`.
    pub(super) fn of(
        input: &PoolInput,
        secret_name: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Self, ExportError> {
        let pool = &input.pool;
        let prov = &pool.provisioning;
        let (arg_flags, flag_keys) = split_flags(&input.flags).map_err(|e| {
            ExportError::usage(format!("pool `{}`: {e}", pool.id), "remove the flag")
        })?;
        let mut env: BTreeMap<String, EnvVar> = BTreeMap::new();
        let mut secret_keys: Vec<String> = Vec::new();
        for (k, v) in &prov.env {
            if k == "CUDA_VISIBLE_DEVICES" {
                warnings.push(format!(
                    "pool `{}`: `CUDA_VISIBLE_DEVICES` is not exported: in Kubernetes the device plugin assigns GPUs",
                    pool.id
                ));
                continue;
            }
            if is_secret_env_value(k, v, &prov.secret_env) {
                env.insert(k.clone(), from_secret(secret_name, k));
                secret_keys.push(k.clone());
            } else {
                env.insert(
                    k.clone(),
                    EnvVar {
                        name: k.clone(),
                        value: Some(v.clone()),
                        value_from: None,
                    },
                );
            }
        }
        // The pool's `api_key` (by reference) comes from the Secret as well.
        let api_key = pool.api_key.as_ref().map(|_| "LLAMA_API_KEY");
        for key in flag_keys.into_iter().chain(api_key) {
            env.insert(key.to_string(), from_secret(secret_name, key));
            secret_keys.push(key.to_string());
        }
        secret_keys.sort();
        secret_keys.dedup();
        Ok(Environment {
            arg_flags,
            vars: env,
            secret_keys,
        })
    }
}

/// Variable `key` read from key `key` of Secret `secret_name`.
pub(super) fn from_secret(secret_name: &str, key: &str) -> EnvVar {
    EnvVar {
        name: key.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret_name.to_string(),
                key: key.to_string(),
                optional: None,
            }),
            ..Default::default()
        }),
    }
}
