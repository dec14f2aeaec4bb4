//! The server container's probes: startup, readiness and liveness on its engine's health path
//! (llama.cpp: `/health`).

use k8s_openapi::api::core::v1::{HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{PORT_NAME, STARTUP_PERIOD_S};

fn http_get(health_path: &str, tls: bool) -> Option<HTTPGetAction> {
    Some(HTTPGetAction {
        path: Some(health_path.into()),
        port: IntOrString::String(PORT_NAME.into()),
        scheme: tls.then(|| "HTTPS".into()),
        ..Default::default()
    })
}

/// Startup: the health path answers 200 once the model is loaded; allowed the pool's
/// `readiness_timeout_ms`. Readiness: out of the Service while not healthy. Liveness: restarted
/// after a minute without an answer.
/// Over HTTPS when the pool serves `listen.tls` (the kubelet does not verify the certificate).
pub(super) fn probes(
    health_path: &str,
    readiness_timeout_ms: u64,
    tls: bool,
) -> (Probe, Probe, Probe) {
    let period_ms = STARTUP_PERIOD_S as u64 * 1000;
    let startup_failures = readiness_timeout_ms
        .div_ceil(period_ms)
        .clamp(1, i32::MAX as u64) as i32;
    let probe = |period: i32, failures: i32| Probe {
        http_get: http_get(health_path, tls),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    (
        probe(STARTUP_PERIOD_S, startup_failures),
        probe(5, 3),
        probe(10, 6),
    )
}
