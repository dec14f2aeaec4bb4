//! The llama-server image of a pool: ggml-org's server images, whose entrypoint is
//! `llama-server` (so the flags go in `args`), CUDA for GPU pools and the CPU build for CPU
//! pools. A source ref that is a llama.cpp release tag (`b4567`) pins the image to the same
//! release (`server-cuda-b4567`); any other ref leaves the floating tag, with a warning.

use provision_plan::{Backend, PoolInput, ProvisioningMode};

pub const REPOSITORY: &str = "ghcr.io/ggml-org/llama.cpp";

/// The image and, when it is not pinned to a release, why.
pub fn image_for(input: &PoolInput, configured: Option<&str>) -> (String, Option<String>) {
    if let Some(image) = configured {
        return (image.to_string(), None);
    }
    let pool = &input.pool;
    let flavour = match pool.backend {
        Backend::Cuda => "server-cuda",
        Backend::Cpu => "server",
    };
    let prov = &pool.provisioning;
    let release = match (prov.mode, &prov.source) {
        (ProvisioningMode::Source, Some(source)) => {
            let r = source.git_ref.trim();
            is_release_tag(r)
                .then(|| r.to_string())
                .ok_or_else(|| format!("source ref `{r}` is not a llama.cpp release tag (`bNNNN`)"))
        }
        (mode, _) => Err(format!(
            "mode `{}` names no llama.cpp release",
            mode.as_str()
        )),
    };
    match release {
        Ok(tag) => (format!("{REPOSITORY}:{flavour}-{tag}"), None),
        Err(why) => (
            format!("{REPOSITORY}:{flavour}"),
            Some(format!(
                "pool `{}`: the image `{REPOSITORY}:{flavour}` is not pinned to a release: {why}; pass --image to pin one",
                pool.id
            )),
        ),
    }
}

/// `b` followed by digits: llama.cpp's release tags, which its images are tagged with.
fn is_release_tag(r: &str) -> bool {
    r.strip_prefix('b')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::is_release_tag;

    #[test]
    fn release_tags() {
        assert!(is_release_tag("b4567"));
        for r in ["b", "master", "703f9e3", "v0.3.36", "b45x", "bb12"] {
            assert!(!is_release_tag(r), "{r}");
        }
    }
}
