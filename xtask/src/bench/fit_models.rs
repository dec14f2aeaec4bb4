//! Figure 9's models: llama-architecture GGUFs of real shapes (dense, GQA, MoE-like; F16 and
//! quantised), written by `provision_steps_model`'s GGUF writer with zero weights (sparse files:
//! a 2 GB model costs no disk) and a SentencePiece-style vocabulary, so the real llama-server
//! loads and serves them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use provision_steps_model::gguf::{GgmlType, MetaArray, MetaValue};
use provision_steps_model::gguf_writer::{GgufWriter, LlamaShape};

pub const F16: u32 = 1;
pub const Q8_0: u32 = 8;
pub const Q4_K: u32 = 12;

/// One generated model and the contexts it is served at.
#[derive(Debug, Clone)]
pub struct FitModel {
    pub name: &'static str,
    /// `dense`, `GQA`, `MoE`: what the row says.
    pub kind: &'static str,
    pub shape: LlamaShape,
    /// `(experts, used per token)`; none: a dense FFN.
    pub experts: Option<(u64, u64)>,
    pub ctx: &'static [u64],
}

const fn shape(
    n_layer: u64,
    n_embd: u64,
    heads: (u64, u64),
    n_ff: u64,
    n_vocab: u64,
    weight_type: u32,
    output: bool,
) -> LlamaShape {
    LlamaShape {
        n_layer,
        n_embd,
        n_head: heads.0,
        n_head_kv: heads.1,
        n_ff,
        n_vocab,
        n_ctx_train: 32768,
        weight_type,
        output,
    }
}

/// The models: every kind in F16 and a quantised type, 100 MB to 2 GB, ctx 512 to 32768.
/// `quick`: three of them at two contexts each (CI).
pub fn models(quick: bool) -> Vec<FitModel> {
    let all = vec![
        // GPT-2-small-like widths, multi-head attention (kv heads = heads).
        FitModel {
            name: "dense-mha-f16",
            kind: "dense",
            shape: shape(12, 768, (12, 12), 3072, 32000, F16, true),
            experts: None,
            ctx: &[512, 4096, 16384],
        },
        FitModel {
            name: "dense-mha-q8_0",
            kind: "dense",
            shape: shape(16, 1024, (16, 16), 4096, 32000, Q8_0, true),
            experts: None,
            ctx: &[2048, 8192, 32768],
        },
        // TinyLlama 1.1B: GQA 32/4.
        FitModel {
            name: "gqa-tinyllama-f16",
            kind: "GQA",
            shape: shape(19, 2048, (32, 4), 5632, 32000, F16, true),
            experts: None,
            ctx: &[512, 8192, 32768],
        },
        // Llama 3.2 1B: GQA 32/8, 128k vocab, tied embeddings.
        FitModel {
            name: "gqa-llama32-q4_k",
            kind: "GQA",
            shape: shape(16, 2048, (32, 8), 8192, 128_256, Q4_K, false),
            experts: None,
            ctx: &[1024, 16384, 32768],
        },
        // Mixtral-like, scaled down: 8 experts, 2 per token.
        FitModel {
            name: "moe-8x2-f16",
            kind: "MoE",
            shape: shape(8, 1024, (16, 4), 2816, 32000, F16, true),
            experts: Some((8, 2)),
            ctx: &[512, 4096, 32768],
        },
        FitModel {
            name: "moe-16x4-q8_0",
            kind: "MoE",
            shape: shape(10, 1536, (24, 8), 2048, 49152, Q8_0, true),
            experts: Some((16, 4)),
            ctx: &[2048, 16384],
        },
    ];
    if !quick {
        return all;
    }
    let keep = ["dense-mha-f16", "gqa-llama32-q4_k", "moe-8x2-f16"];
    all.into_iter()
        .filter(|m| keep.contains(&m.name))
        .map(|m| FitModel {
            ctx: &m.ctx[..2],
            ..m
        })
        .collect()
}

impl FitModel {
    /// The GGUF: the writer's llama layout, the FFN as experts for a MoE, and a vocabulary.
    pub fn writer(&self) -> GgufWriter {
        let s = self.shape;
        let mut w = GgufWriter::llama(s)
            .kv(
                "llama.attention.layer_norm_rms_epsilon",
                MetaValue::F32(1e-5),
            )
            .kv(
                "llama.rope.dimension_count",
                MetaValue::U32((s.n_embd / s.n_head) as u32),
            );
        w.metadata.retain(|(k, _)| k != "general.name");
        w.metadata
            .push(("general.name".into(), MetaValue::String(self.name.into())));
        if let Some((n_expert, n_used)) = self.experts {
            w = w
                .kv("llama.expert_count", MetaValue::U32(n_expert as u32))
                .kv("llama.expert_used_count", MetaValue::U32(n_used as u32));
            w.tensors.retain(|(name, _, _)| {
                !(name.ends_with("ffn_gate.weight")
                    || name.ends_with("ffn_up.weight")
                    || name.ends_with("ffn_down.weight"))
            });
            let t = s.weight_type;
            for i in 0..s.n_layer {
                w = w
                    .tensor(
                        &format!("blk.{i}.ffn_gate_inp.weight"),
                        &[s.n_embd, n_expert],
                        0,
                    )
                    .tensor(
                        &format!("blk.{i}.ffn_gate_exps.weight"),
                        &[s.n_embd, s.n_ff, n_expert],
                        t,
                    )
                    .tensor(
                        &format!("blk.{i}.ffn_up_exps.weight"),
                        &[s.n_embd, s.n_ff, n_expert],
                        t,
                    )
                    .tensor(
                        &format!("blk.{i}.ffn_down_exps.weight"),
                        &[s.n_ff, s.n_embd, n_expert],
                        t,
                    );
            }
        }
        with_vocab(w, s.n_vocab)
    }

    /// Write it under `dir` (sparse); its path and size.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, u64)> {
        let path = dir.join(format!("{}.gguf", self.name));
        let size = self
            .writer()
            .write(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok((path, size))
    }

    /// The weight type's name (`F16`, `Q8_0`).
    pub fn weight_type(&self) -> &'static str {
        GgmlType::from_id(self.shape.weight_type).map_or("?", |t| t.name)
    }
}

fn array(elem_type: u32, values: Vec<MetaValue>) -> MetaValue {
    MetaValue::Array(MetaArray {
        elem_type,
        len: values.len() as u64,
        values,
    })
}

/// A SentencePiece (`llama`) vocabulary of `n` tokens: `<unk>`, `<s>`, `</s>`, the 256 byte
/// tokens, then words `▁t<i>` (as the e2e's tiny model, `fixtures/models/make_tiny_gguf.py`).
fn with_vocab(w: GgufWriter, n: u64) -> GgufWriter {
    const NORMAL: i32 = 1;
    const UNKNOWN: i32 = 2;
    const CONTROL: i32 = 3;
    const BYTE: i32 = 6;
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![UNKNOWN, CONTROL, CONTROL];
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(BYTE);
    }
    let mut i = 0u64;
    while (tokens.len() as u64) < n {
        tokens.push(format!("\u{2581}t{i}"));
        types.push(NORMAL);
        i += 1;
    }
    let scores = (0..tokens.len())
        .map(|i| MetaValue::F32(if i < 259 { 0.0 } else { -(i as f32) }))
        .collect();
    w.kv("tokenizer.ggml.model", MetaValue::String("llama".into()))
        .kv(
            "tokenizer.ggml.tokens",
            array(8, tokens.into_iter().map(MetaValue::String).collect()),
        )
        .kv("tokenizer.ggml.scores", array(6, scores))
        .kv(
            "tokenizer.ggml.token_type",
            array(5, types.into_iter().map(MetaValue::I32).collect()),
        )
        .kv("tokenizer.ggml.bos_token_id", MetaValue::U32(1))
        .kv("tokenizer.ggml.eos_token_id", MetaValue::U32(2))
        .kv("tokenizer.ggml.unknown_token_id", MetaValue::U32(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use provision_steps_model::ModelInfo;

    #[test]
    fn the_set_spans_the_kinds_types_sizes_and_contexts_asked() {
        let all = models(false);
        assert!(all.len() >= 6);
        for kind in ["dense", "GQA", "MoE"] {
            let of: Vec<_> = all.iter().filter(|m| m.kind == kind).collect();
            assert!(of.iter().any(|m| m.shape.weight_type == F16), "{kind} F16");
            assert!(
                of.iter().any(|m| m.shape.weight_type != F16),
                "{kind} quantised"
            );
        }
        let sizes: Vec<u64> = all.iter().map(|m| m.writer().header().1).collect();
        assert!(
            sizes
                .iter()
                .all(|&s| (100_000_000..=2_000_000_000).contains(&s)),
            "{sizes:?}"
        );
        let ctx: Vec<u64> = all.iter().flat_map(|m| m.ctx.iter().copied()).collect();
        assert_eq!(ctx.iter().min(), Some(&512));
        assert_eq!(ctx.iter().max(), Some(&32768));
        assert!(models(true).len() < all.len());
    }

    #[test]
    fn a_moe_model_reads_back_with_its_experts_and_vocabulary() {
        let m = models(false).into_iter().find(|m| m.kind == "MoE").unwrap();
        let dir = std::env::temp_dir().join(format!("fit-models-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (path, size) = m.write(&dir).unwrap();
        let info = ModelInfo::open(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(info.file_size, size);
        assert_eq!(info.vocab_size, Some(m.shape.n_vocab));
        assert_eq!(info.block_count, m.shape.n_layer);
        let (n_expert, _) = m.experts.unwrap();
        let s = m.shape;
        // Per layer: attention, norms, router, experts (F16: 2 bytes each).
        let attn =
            2 * (2 * s.n_embd * s.n_embd + 2 * s.n_embd * (s.n_embd / s.n_head * s.n_head_kv));
        let ffn = 2 * 3 * s.n_embd * s.n_ff * n_expert + 4 * s.n_embd * n_expert;
        assert_eq!(info.layer_bytes[0], attn + ffn + 2 * 4 * s.n_embd);
    }
}
