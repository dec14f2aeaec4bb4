//! GGUF header reading and the VRAM estimate, on GGUF files written by the tests, with
//! expectations computed by hand (the arithmetic is in the comments).

use provision_steps_model::estimate::{
    estimate, largest_fitting_ctx, FitInput, GpuLayers, MARGIN_FIXED, MIB,
};
use provision_steps_model::gguf::{Gguf, GgufError, MetaValue};
use provision_steps_model::gguf_writer::{GgufWriter, LlamaShape};
use provision_steps_model::ModelInfo;

/// n_embd 64, 2 layers, 4 heads, 2 KV heads (head dim 16), n_ff 128, vocab 300, all F32.
fn tiny() -> LlamaShape {
    LlamaShape {
        n_layer: 2,
        n_embd: 64,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 128,
        n_vocab: 300,
        n_ctx_train: 4096,
        weight_type: 0,
        output: true,
    }
}

// Per layer (F32, 4 bytes): attn_norm 64·4 = 256, q 64·64·4 = 16384, k 64·32·4 = 8192,
// v 8192, o 16384, ffn_norm 256, gate/up/down 64·128·4 = 32768 each:
// 256 + 16384 + 8192 + 8192 + 16384 + 256 + 3·32768 = 147968.
const LAYER: u64 = 147_968;
// output_norm 256 + output 64·300·4 = 76800.
const OUTPUT: u64 = 77_056;
// token_embd 64·300·4.
const INPUT: u64 = 76_800;

fn input(ctx: u64) -> FitInput {
    FitInput {
        ctx,
        parallel: 1,
        per_slot_ctx: false,
        gpu_layers: GpuLayers::All,
        tensor_split: None,
        kv_bytes_k: 2.0,
        kv_bytes_v: 2.0,
        flash_attn: false,
        n_ubatch: 512,
    }
}

#[test]
fn reads_the_header_of_a_written_model() {
    let bytes = GgufWriter::llama(tiny()).to_bytes();
    let g = Gguf::parse_bytes(&bytes).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.tensors.len(), 3 + 2 * 9);
    assert_eq!(
        g.get("general.architecture"),
        Some(&MetaValue::String("llama".into()))
    );
    assert_eq!(g.weight_bytes(), 2 * LAYER + OUTPUT + INPUT);
    let m = ModelInfo::from_gguf(&g).unwrap();
    assert_eq!(m.architecture, "llama");
    assert_eq!(m.name.as_deref(), Some("tiny-test"));
    assert_eq!(m.block_count, 2);
    assert_eq!(m.embedding_length, 64);
    assert_eq!(m.head_count, 4);
    assert_eq!(m.head_count_kv, vec![2, 2]);
    assert_eq!((m.key_length, m.value_length), (16, 16));
    assert_eq!(m.context_length, Some(4096));
    assert_eq!(m.vocab_size, Some(300));
    assert_eq!(m.file_type_name, Some("F32"));
    assert_eq!(m.layer_bytes, vec![LAYER, LAYER]);
    assert_eq!(m.output_bytes, OUTPUT);
    assert_eq!(m.input_bytes, INPUT);
    assert_eq!(m.file_size, bytes.len() as u64);
}

#[test]
fn quantised_sizes_follow_the_block_layout() {
    // Q8_0: 32 elements in 34 bytes; Q4_K: 256 in 144.
    let bytes = GgufWriter::new()
        .kv("general.architecture", MetaValue::String("llama".into()))
        .tensor("a", &[256, 4], 8)
        .tensor("b", &[512, 2], 12)
        .to_bytes();
    let g = Gguf::parse_bytes(&bytes).unwrap();
    assert_eq!(g.tensors[0].n_bytes, 256 * 4 / 32 * 34);
    assert_eq!(g.tensors[1].n_bytes, 512 * 2 / 256 * 144);
}

#[test]
fn tied_embeddings_put_a_copy_on_the_output_device() {
    let bytes = GgufWriter::llama(LlamaShape {
        output: false,
        ..tiny()
    })
    .to_bytes();
    let m = ModelInfo::from_gguf(&Gguf::parse_bytes(&bytes).unwrap()).unwrap();
    assert_eq!(m.output_bytes, 256 + INPUT);
}

#[test]
fn truncated_and_foreign_files_get_clear_errors() {
    let bytes = GgufWriter::llama(tiny()).to_bytes();
    let g = Gguf::parse_bytes(&bytes).unwrap();
    // Cut inside the header.
    let err = Gguf::parse_bytes(&bytes[..200]).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    // Cut inside the tensor data: the header parses, the last tensor is past the end.
    let err = Gguf::parse_bytes(&bytes[..bytes.len() - 1]).unwrap_err();
    assert!(
        err.to_string()
            .contains("the data of tensor `blk.1.ffn_down.weight`"),
        "{err}"
    );
    let err = Gguf::parse_bytes(&bytes[..g.data_offset as usize]).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    // Not a GGUF.
    let err = Gguf::parse_bytes(b"PK\x03\x04 a zip file").unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a GGUF file: it starts with \"PK\\u{3}\\u{4}\", not \"GGUF\""
    );
    let err = Gguf::parse_bytes(b"GG").unwrap_err();
    assert!(matches!(err, GgufError::NotGguf { .. }));
    // Big-endian and old versions.
    let mut be = bytes.clone();
    be[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(matches!(Gguf::parse_bytes(&be), Err(GgufError::BigEndian)));
    let mut v1 = bytes.clone();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        Gguf::parse_bytes(&v1),
        Err(GgufError::UnsupportedVersion(1))
    ));
    // A tensor count no file could hold fails before anything is allocated.
    let mut huge = bytes.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        Gguf::parse_bytes(&huge),
        Err(GgufError::Truncated { .. })
    ));
}

#[test]
fn reads_a_sparse_file_from_disk_without_reading_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.gguf");
    // A "7B-like" shape: 32 layers of Q8_0, 4096 wide — 7 GiB of holes.
    let shape = LlamaShape {
        n_layer: 32,
        n_embd: 4096,
        n_head: 32,
        n_head_kv: 8,
        n_ff: 14336,
        n_vocab: 128_256,
        n_ctx_train: 131_072,
        weight_type: 8,
        output: true,
    };
    let size = GgufWriter::llama(shape).write(&path).unwrap();
    let m = ModelInfo::open(&path).unwrap();
    assert_eq!(m.file_size, size);
    assert!(m.weight_bytes > 7 << 30, "{}", m.weight_bytes);
    // Layer: norms 2·4096·4 = 32768; q, o: 4096·4096/32·34 = 17825792 each; k, v: 4096·1024/32·34
    // = 4456448 each; gate, up, down: 4096·14336/32·34 = 62390272 each.
    assert_eq!(
        m.layer_bytes[0],
        32_768 + 2 * 17_825_792 + 2 * 4_456_448 + 3 * 62_390_272
    );
}

#[test]
fn one_device_estimate_by_hand() {
    let m =
        ModelInfo::from_gguf(&Gguf::parse_bytes(&GgufWriter::llama(tiny()).to_bytes()).unwrap())
            .unwrap();
    let e = estimate(&m, &input(256), &[(0, 24_576 * MIB)]);
    assert_eq!(e.gpu_layers_offloaded, 3);
    assert_eq!(e.layers_on_host, 0);
    let d = &e.devices[0];
    assert_eq!((d.layers, d.output_layer), (2, true));
    // Weights: both layers and the output layer; the token embeddings stay on the host.
    assert_eq!(d.weights, 2 * LAYER + OUTPUT);
    // KV: ctx 256 × 2 layers × 2 KV heads × 16 × 2 (K and V) × 2 bytes (f16) = 65536.
    assert_eq!(d.kv_cache, 65_536);
    // Compute: hidden 4·512·(3·64 + 2·128) = 917504; scores 4·512·4 heads·256 = 2097152 and
    // their mask 4·512·256 = 524288; logits 4·512·300 = 614400;
    // 917504 + max(2097152 + 524288, 614400) = 3538944.
    assert_eq!(d.compute, 3_538_944);
    // Margin: 512 MiB + 5% of (372992 + 65536 + 3538944 = 3977472) = 198873.6 → 198874.
    assert_eq!(d.margin, MARGIN_FIXED + 198_874);
    assert_eq!(d.need, 3_977_472 + MARGIN_FIXED + 198_874);
    assert!(e.fits());

    // Flash attention: no score matrix, logits are the peak: 917504 + 614400.
    let fa = estimate(
        &m,
        &FitInput {
            flash_attn: true,
            ..input(256)
        },
        &[(0, 24_576 * MIB)],
    );
    assert_eq!(fa.devices[0].compute, 1_531_904);

    // q8_0 KV cache: 34/32 bytes per element: 65536 / 2 × 34 / 32 = 34816.
    let q8 = estimate(
        &m,
        &FitInput {
            kv_bytes_k: 34.0 / 32.0,
            kv_bytes_v: 34.0 / 32.0,
            ..input(256)
        },
        &[(0, 24_576 * MIB)],
    );
    assert_eq!(q8.devices[0].kv_cache, 34_816);

    // Four slots that each own their context would quadruple it; llama-server's share one.
    let per_slot = estimate(
        &m,
        &FitInput {
            parallel: 4,
            per_slot_ctx: true,
            flash_attn: true,
            ..input(256)
        },
        &[(0, 24_576 * MIB)],
    );
    assert_eq!(per_slot.devices[0].kv_cache, 4 * 65_536);
    let shared = estimate(
        &m,
        &FitInput {
            parallel: 4,
            flash_attn: true,
            ..input(256)
        },
        &[(0, 24_576 * MIB)],
    );
    assert_eq!(shared.devices[0].kv_cache, 65_536);
}

#[test]
fn layers_split_like_llama_cpp() {
    let m =
        ModelInfo::from_gguf(&Gguf::parse_bytes(&GgufWriter::llama(tiny()).to_bytes()).unwrap())
            .unwrap();
    // tensor_split 1:1 over 3 offloaded layers (2 + output): split points 0.5, 1.0; layer i goes
    // to the first device whose point exceeds i/3: 0 → GPU 0, 1/3 → GPU 0, 2/3 (output) → GPU 1.
    let e = estimate(
        &m,
        &FitInput {
            tensor_split: Some(vec![1.0, 1.0]),
            ..input(256)
        },
        &[(0, 24_576 * MIB), (1, 24_576 * MIB)],
    );
    let (a, b) = (&e.devices[0], &e.devices[1]);
    assert_eq!((a.device, a.layers, a.output_layer), (0, 2, false));
    assert_eq!((b.device, b.layers, b.output_layer), (1, 0, true));
    assert_eq!(a.weights, 2 * LAYER);
    assert_eq!(b.weights, OUTPUT);
    assert_eq!(a.kv_cache, 65_536);
    assert_eq!(b.kv_cache, 0);
    // GPU 0: hidden + scores and mask; GPU 1 (output only, no attention): hidden + logits.
    assert_eq!(a.compute, 917_504 + 2_097_152 + 524_288);
    assert_eq!(b.compute, 917_504 + 614_400);

    // 1:3 → points 0.25, 1.0: only layer 0 (x = 0) lands on GPU 0.
    let e = estimate(
        &m,
        &FitInput {
            tensor_split: Some(vec![1.0, 3.0]),
            ..input(256)
        },
        &[(0, 24_576 * MIB), (1, 24_576 * MIB)],
    );
    assert_eq!(e.devices[0].layers, 1);
    assert_eq!((e.devices[1].layers, e.devices[1].output_layer), (1, true));

    // No tensor_split: by free memory, as llama.cpp does. 3:1 free → points 0.75, 1.0: 0, 1/3
    // and 2/3 are all below 0.75, so GPU 1 gets nothing and needs nothing.
    let e = estimate(&m, &input(256), &[(0, 3 * 8192 * MIB), (1, 8192 * MIB)]);
    assert_eq!((e.devices[0].layers, e.devices[0].output_layer), (2, true));
    assert_eq!((e.devices[1].layers, e.devices[1].need), (0, 0));
    // 1:1 free → like tensor_split 1:1.
    let e = estimate(&m, &input(256), &[(0, 8192 * MIB), (1, 8192 * MIB)]);
    assert_eq!(e.devices[0].layers, 2);
    assert!(e.devices[1].output_layer);

    // Partial offload: 1 GPU layer is the output layer only; both repeating layers stay home.
    let e = estimate(
        &m,
        &FitInput {
            gpu_layers: GpuLayers::Count(1),
            ..input(256)
        },
        &[(0, 24_576 * MIB)],
    );
    assert_eq!(e.layers_on_host, 2);
    assert_eq!(e.devices[0].weights, OUTPUT);
}

#[test]
fn largest_fitting_ctx_by_hand() {
    let m =
        ModelInfo::from_gguf(&Gguf::parse_bytes(&GgufWriter::llama(tiny()).to_bytes()).unwrap())
            .unwrap();
    // need(ctx) = base + 512 MiB + ceil(5% base), base = 372992 + 256·ctx (KV) + 917504 +
    // 8192·ctx (scores) + 2048·ctx (mask) = 1290496 + 10496·ctx. At ctx 1024: base 12038400,
    // margin 512 MiB + 601920, need 549511232 bytes.
    let free = 549_511_232;
    let at_1024 = estimate(&m, &input(1024), &[(0, free)]);
    assert_eq!(at_1024.devices[0].need, free);
    assert!(at_1024.fits());
    assert!(!estimate(&m, &input(1280), &[(0, free)]).fits());
    assert_eq!(
        largest_fitting_ctx(&m, &input(4096), &[(0, free)]),
        Some(1024)
    );
    // Less than the margin: nothing fits.
    assert_eq!(
        largest_fitting_ctx(&m, &input(4096), &[(0, 100 * MIB)]),
        None
    );
}

#[test]
fn gpu_layers_spellings() {
    assert_eq!(GpuLayers::parse("999").unwrap(), GpuLayers::Count(999));
    assert_eq!(GpuLayers::parse("-1").unwrap(), GpuLayers::All);
    assert_eq!(GpuLayers::parse("all").unwrap(), GpuLayers::All);
    assert_eq!(GpuLayers::parse("auto").unwrap(), GpuLayers::All);
    assert!(GpuLayers::parse("lots").is_err());
}

/// A mixture of experts: each token's activations through the experts it is routed to are in
/// the compute buffer beside the hidden states (benchmark figure 9 measured 22–32 MiB of them
/// on the real server, which the estimate left out).
#[test]
fn a_mixture_of_experts_adds_its_routed_activations() {
    let dense =
        ModelInfo::from_gguf(&Gguf::parse_bytes(&GgufWriter::llama(tiny()).to_bytes()).unwrap())
            .unwrap();
    assert_eq!(dense.experts, None);
    let moe = GgufWriter::llama(tiny())
        .kv("llama.expert_count", MetaValue::U32(8))
        .kv("llama.expert_used_count", MetaValue::U32(2))
        .kv("llama.expert_feed_forward_length", MetaValue::U32(96));
    let moe = ModelInfo::from_gguf(&Gguf::parse_bytes(&moe.to_bytes()).unwrap()).unwrap();
    assert_eq!(
        (moe.experts, moe.expert_feed_forward_length),
        (Some((8, 2)), Some(96))
    );
    let at = |m: &ModelInfo| estimate(m, &input(256), &[(0, 24_576 * MIB)]).devices[0].compute;
    // 2 (gate, up) × 4 bytes × 512 tokens × 2 experts × 96.
    assert_eq!(at(&moe) - at(&dense), 2 * 4 * 512 * 2 * 96);
}
