#![no_main]

use libfuzzer_sys::fuzz_target;
use provision_steps_model::{Gguf, ModelInfo};

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = Gguf::parse_bytes(data) {
        let _ = ModelInfo::from_gguf(&g);
    }
});
