//! What the GPU tests of the cli share: a project directory with a tiny GGUF model and a
//! stand-in `nvidia-smi` (one RTX 3090, as a real one answers provision's query) in its `bin/`.

use std::os::unix::fs::PermissionsExt;

use provision_steps_model::gguf_writer::{GgufWriter, LlamaShape};

/// The query provision's gpu-check asks `nvidia-smi`.
pub const QUERY: &str =
    "--query-gpu=index,uuid,name,memory.total,memory.free,driver_version,compute_cap";
/// A host with one RTX 3090, as `nvidia-smi --format=csv,noheader,nounits` prints it.
pub const ONE_GPU: &str = "0, GPU-6f1a2b3c-0000-1111-2222-333344445555, NVIDIA GeForce RTX 3090, 24576, 23912, 550.54.14, 8.6\n";

/// A new project directory: `model.gguf` and `bin/nvidia-smi` (put `bin/` first in `PATH`).
pub fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    GgufWriter::llama(LlamaShape {
        n_layer: 2,
        n_embd: 64,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 128,
        n_vocab: 300,
        n_ctx_train: 4096,
        weight_type: 1,
        output: true,
    })
    .write(&dir.path().join("model.gguf"))
    .unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let smi = bin.join("nvidia-smi");
    std::fs::write(
        &smi,
        format!(
            "#!/bin/sh\n[ \"$1\" = \"{QUERY}\" ] || {{ echo \"unexpected args: $*\" >&2; exit 64; }}\ncat <<'EOF'\n{ONE_GPU}EOF\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}
