//! What the memory estimate needs to know about a model, read from its GGUF header (the headers
//! of every shard of a split model).

use std::path::Path;

use serde::Serialize;

use crate::gguf::{Gguf, GgufError};

/// The shape of a model and where its weight bytes are.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    pub gguf_version: u32,
    pub architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `general.file_type` (llama.cpp's `LLAMA_FTYPE_*`) and its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_type: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_type_name: Option<&'static str>,
    /// Training context (`<arch>.context_length`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    pub block_count: u64,
    pub embedding_length: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed_forward_length: Option<u64>,
    /// A mixture of experts: `(<arch>.expert_count, <arch>.expert_used_count)`, the experts
    /// of each layer and how many each token goes through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experts: Option<(u64, u64)>,
    /// The width of one expert's FFN (`<arch>.expert_feed_forward_length`, else
    /// `feed_forward_length`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expert_feed_forward_length: Option<u64>,
    /// Attention heads (the largest per-layer value).
    pub head_count: u64,
    /// KV heads of each layer (`head_count_kv`, per layer or one value; `head_count` when absent).
    pub head_count_kv: Vec<u64>,
    /// Width of one K head (`attention.key_length`, else `embedding_length / head_count`).
    pub key_length: u64,
    /// Width of one V head.
    pub value_length: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<u64>,
    /// Over every shard.
    pub tensor_count: usize,
    /// Bytes of every shard.
    pub file_size: u64,
    /// Files the model is split in (1: a whole GGUF).
    pub shards: usize,
    /// Every tensor's data.
    pub weight_bytes: u64,
    /// Tensors of each repeating layer (`blk.N.*`).
    pub layer_bytes: Vec<u64>,
    /// The output layer: `output.weight`, `output_norm.*` and other non-layer tensors but the
    /// token embeddings; plus a copy of the token embeddings when the output is tied to them.
    pub output_bytes: u64,
    /// The input layer (token embeddings): llama.cpp keeps it in host memory.
    pub input_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("the GGUF header has no `{0}`: cannot estimate the memory this model needs")]
    Missing(String),
    /// A split model that is not whole or not one set (the message says which file and what
    /// to do).
    #[error("{0}")]
    Split(String),
}

/// Names of llama.cpp's `LLAMA_FTYPE_*` values.
pub fn file_type_name(ft: u64) -> Option<&'static str> {
    Some(match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

impl ModelInfo {
    /// Read the header of `path` (no tensor data) and derive the model's shape. The first
    /// shard of a split model (`-00001-of-0000N.gguf`) stands for all of them: every shard's
    /// header is read and counted (see [`crate::shard_set`]).
    pub fn open(path: &Path) -> Result<ModelInfo, InspectError> {
        let shards = crate::shard_set::open(path)?;
        let headers: Vec<&Gguf> = shards.iter().map(|s| &s.header).collect();
        ModelInfo::from_shards(&headers)
    }

    /// The model of one whole GGUF.
    pub fn from_gguf(g: &Gguf) -> Result<ModelInfo, InspectError> {
        ModelInfo::from_shards(&[g])
    }

    /// The model of every shard's header, the first first: the shape from the first, the
    /// tensors from all.
    pub fn from_shards(shards: &[&Gguf]) -> Result<ModelInfo, InspectError> {
        let g = *shards.first().expect("a model has a first file");
        let tensors = || shards.iter().flat_map(|s| s.tensors.iter());
        let arch = g
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .ok_or_else(|| InspectError::Missing("general.architecture".into()))?
            .to_string();
        let key = |k: &str| format!("{arch}.{k}");
        let list = |k: &str| g.get(&key(k)).and_then(|v| v.as_u64_list());
        let required = |k: &str| list(k).ok_or_else(|| InspectError::Missing(key(k)));
        let block_count = *required("block_count")?
            .first()
            .ok_or_else(|| InspectError::Missing(key("block_count")))?;
        let embedding_length = required("embedding_length")?.first().copied().unwrap_or(0);
        let heads = required("attention.head_count")?;
        let head_count = heads.iter().copied().max().unwrap_or(0);
        if block_count > 100_000 || head_count == 0 || embedding_length == 0 {
            return Err(InspectError::Missing(format!(
                "{} (block_count {block_count}, embedding_length {embedding_length}, head_count {head_count} make no model)",
                key("attention.head_count")
            )));
        }
        let per_layer = |v: Vec<u64>| -> Vec<u64> {
            if v.len() as u64 == block_count {
                v
            } else {
                vec![v.first().copied().unwrap_or(0); block_count as usize]
            }
        };
        let head_count_kv = per_layer(list("attention.head_count_kv").unwrap_or(heads.clone()));
        let scalar = |k: &str| list(k).and_then(|v| v.into_iter().max());
        let key_length = scalar("attention.key_length").unwrap_or(embedding_length / head_count);
        let value_length =
            scalar("attention.value_length").unwrap_or(embedding_length / head_count);
        let vocab_size = scalar("vocab_size")
            .or_else(|| match g.get("tokenizer.ggml.tokens") {
                Some(crate::gguf::MetaValue::Array(a)) => Some(a.len),
                _ => None,
            })
            .or_else(|| {
                tensors()
                    .find(|t| t.name == "token_embd.weight")
                    .and_then(|t| t.dims.get(1).copied())
            });

        let mut layer_bytes = vec![0u64; block_count as usize];
        let mut output_bytes = 0u64;
        let mut input_bytes = 0u64;
        let mut has_output = false;
        for t in tensors() {
            let layer = t
                .name
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').next())
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n < layer_bytes.len());
            if let Some(n) = layer {
                layer_bytes[n] += t.n_bytes;
            } else if t.name.starts_with("token_embd") {
                input_bytes += t.n_bytes;
            } else {
                has_output |= t.name == "output.weight";
                output_bytes += t.n_bytes;
            }
        }
        if !has_output {
            // Tied embeddings: llama.cpp loads the token embeddings a second time as the output
            // matrix, on the output layer's device.
            output_bytes += tensors()
                .find(|t| t.name == "token_embd.weight")
                .map_or(0, |t| t.n_bytes);
        }
        let file_type = g.get("general.file_type").and_then(|v| v.as_u64());
        Ok(ModelInfo {
            gguf_version: g.version,
            name: g
                .get("general.name")
                .and_then(|v| v.as_str())
                .map(String::from),
            file_type,
            file_type_name: file_type.and_then(file_type_name),
            context_length: scalar("context_length"),
            block_count,
            embedding_length,
            feed_forward_length: scalar("feed_forward_length"),
            experts: match (scalar("expert_count"), scalar("expert_used_count")) {
                (Some(n), Some(used)) if n > 0 && used > 0 => Some((n, used)),
                _ => None,
            },
            expert_feed_forward_length: scalar("expert_feed_forward_length")
                .or_else(|| scalar("feed_forward_length")),
            head_count,
            head_count_kv,
            key_length,
            value_length,
            vocab_size,
            tensor_count: tensors().count(),
            file_size: shards.iter().map(|s| s.file_size).sum(),
            shards: shards.len(),
            weight_bytes: shards.iter().map(|s| s.weight_bytes()).sum(),
            layer_bytes,
            output_bytes,
            input_bytes,
            architecture: arch,
        })
    }
}
