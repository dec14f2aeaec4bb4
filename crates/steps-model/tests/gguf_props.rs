//! The GGUF reader never panics: on arbitrary bytes, on every truncation of a valid file, and
//! on a valid file with bytes flipped.

use proptest::prelude::*;
use provision_steps_model::gguf::{Gguf, MetaValue};
use provision_steps_model::gguf_writer::{GgufWriter, LlamaShape};
use provision_steps_model::ModelInfo;

fn valid() -> Vec<u8> {
    GgufWriter::llama(LlamaShape {
        n_layer: 2,
        n_embd: 32,
        n_head: 4,
        n_head_kv: 4,
        n_ff: 64,
        n_vocab: 40,
        n_ctx_train: 128,
        weight_type: 0,
        output: false,
    })
    .kv(
        "tokenizer.ggml.scores",
        MetaValue::Array(provision_steps_model::gguf::MetaArray {
            elem_type: 6,
            len: 3,
            values: vec![
                MetaValue::F32(0.0),
                MetaValue::F32(1.0),
                MetaValue::F32(2.0),
            ],
        }),
    )
    .to_bytes()
}

fn check(bytes: &[u8]) {
    if let Ok(g) = Gguf::parse_bytes(bytes) {
        let _ = ModelInfo::from_gguf(&g);
    }
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let bytes = valid();
    assert!(Gguf::parse_bytes(&bytes).is_ok());
    for n in 0..bytes.len() {
        assert!(
            Gguf::parse_bytes(&bytes[..n]).is_err(),
            "a prefix of {n} bytes parsed"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
        let mut with_magic = b"GGUF\x03\0\0\0".to_vec();
        with_magic.extend_from_slice(&bytes);
        check(&with_magic);
    }

    #[test]
    fn corrupted_valid_files_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = valid();
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        let n = cut.index(bytes.len() + 1);
        check(&bytes[..n]);
        check(&bytes);
    }
}
