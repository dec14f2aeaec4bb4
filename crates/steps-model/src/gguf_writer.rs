//! A small GGUF writer for tests and fixtures: metadata and tensor infos as llama.cpp writes
//! them, tensor data zero-filled (written sparse, so a "7B" test model costs no disk).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::gguf::{GgmlType, MetaValue, DEFAULT_ALIGNMENT};

/// A GGUF file to write.
#[derive(Debug, Clone, Default)]
pub struct GgufWriter {
    pub version: u32,
    pub metadata: Vec<(String, MetaValue)>,
    /// Name, dims (ne0 first), ggml type.
    pub tensors: Vec<(String, Vec<u64>, GgmlType)>,
}

/// Shapes of a llama-like model.
#[derive(Debug, Clone, Copy)]
pub struct LlamaShape {
    pub n_layer: u64,
    pub n_embd: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub n_ff: u64,
    pub n_vocab: u64,
    pub n_ctx_train: u64,
    /// Type of the 2-D weight matrices (norms are F32).
    pub weight_type: u32,
    /// A separate `output.weight` (else the token embeddings are tied to the output).
    pub output: bool,
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter {
            version: 3,
            ..GgufWriter::default()
        }
    }

    pub fn kv(mut self, key: &str, value: MetaValue) -> GgufWriter {
        self.metadata.push((key.into(), value));
        self
    }

    pub fn tensor(mut self, name: &str, dims: &[u64], type_id: u32) -> GgufWriter {
        let ty = GgmlType::from_id(type_id).expect("a known ggml type");
        self.tensors.push((name.into(), dims.to_vec(), ty));
        self
    }

    /// A llama-architecture model with the standard tensor names.
    pub fn llama(s: LlamaShape) -> GgufWriter {
        let head_dim = s.n_embd / s.n_head;
        let n_embd_kv = head_dim * s.n_head_kv;
        let mut w = GgufWriter::new()
            .kv("general.architecture", MetaValue::String("llama".into()))
            .kv("general.name", MetaValue::String("tiny-test".into()))
            .kv("general.file_type", MetaValue::U32(s.weight_type))
            .kv("llama.context_length", MetaValue::U32(s.n_ctx_train as u32))
            .kv("llama.embedding_length", MetaValue::U32(s.n_embd as u32))
            .kv("llama.block_count", MetaValue::U32(s.n_layer as u32))
            .kv("llama.feed_forward_length", MetaValue::U32(s.n_ff as u32))
            .kv(
                "llama.attention.head_count",
                MetaValue::U32(s.n_head as u32),
            )
            .kv(
                "llama.attention.head_count_kv",
                MetaValue::U32(s.n_head_kv as u32),
            )
            .kv("llama.vocab_size", MetaValue::U32(s.n_vocab as u32))
            .tensor("token_embd.weight", &[s.n_embd, s.n_vocab], s.weight_type)
            .tensor("output_norm.weight", &[s.n_embd], 0);
        if s.output {
            w = w.tensor("output.weight", &[s.n_embd, s.n_vocab], s.weight_type);
        }
        for i in 0..s.n_layer {
            let t = s.weight_type;
            w = w
                .tensor(&format!("blk.{i}.attn_norm.weight"), &[s.n_embd], 0)
                .tensor(&format!("blk.{i}.attn_q.weight"), &[s.n_embd, s.n_embd], t)
                .tensor(&format!("blk.{i}.attn_k.weight"), &[s.n_embd, n_embd_kv], t)
                .tensor(&format!("blk.{i}.attn_v.weight"), &[s.n_embd, n_embd_kv], t)
                .tensor(
                    &format!("blk.{i}.attn_output.weight"),
                    &[s.n_embd, s.n_embd],
                    t,
                )
                .tensor(&format!("blk.{i}.ffn_norm.weight"), &[s.n_embd], 0)
                .tensor(&format!("blk.{i}.ffn_gate.weight"), &[s.n_embd, s.n_ff], t)
                .tensor(&format!("blk.{i}.ffn_up.weight"), &[s.n_embd, s.n_ff], t)
                .tensor(&format!("blk.{i}.ffn_down.weight"), &[s.n_ff, s.n_embd], t);
        }
        w
    }

    /// A model shaped like Llama 3.3 70B Instruct in Q4_K_M (80 layers of 8192, GQA 64/8,
    /// FFN 28672, vocab 128256; Q4_K weights, Q6_K for the output and, as `llama-quantize`
    /// gives about half the layers, for `attn_v` and `ffn_down` of every other layer): about
    /// 42.5 GB of weights, as the real file has.
    pub fn llama_70b_q4_k_m() -> GgufWriter {
        const Q4_K: u32 = 12;
        const Q6_K: u32 = 14;
        let mut w = GgufWriter::llama(LlamaShape {
            n_layer: 80,
            n_embd: 8192,
            n_head: 64,
            n_head_kv: 8,
            n_ff: 28672,
            n_vocab: 128_256,
            n_ctx_train: 131_072,
            weight_type: Q4_K,
            output: true,
        });
        // `general.file_type` 15: LLAMA_FTYPE_MOSTLY_Q4_K_M.
        for (k, v) in &mut w.metadata {
            if k == "general.file_type" {
                *v = MetaValue::U32(15);
            }
        }
        let q6_k = GgmlType::from_id(Q6_K).expect("Q6_K");
        for (name, _, ty) in &mut w.tensors {
            let layer: Option<u64> = name
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').next())
                .and_then(|n| n.parse().ok());
            let heavy = name.ends_with("attn_v.weight") || name.ends_with("ffn_down.weight");
            if name == "output.weight" || (heavy && layer.is_some_and(|l| l % 2 == 0)) {
                *ty = q6_k;
            }
        }
        w
    }

    /// The header bytes (up to the aligned start of the data) and the total file size.
    pub fn header(&self) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend_from_slice(&type_of(v).to_le_bytes());
            put_value(&mut out, v);
        }
        let align = DEFAULT_ALIGNMENT;
        let mut offset = 0u64;
        for (name, dims, ty) in &self.tensors {
            put_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.id.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            let n: u64 = dims.iter().product();
            offset += ty.bytes_for(n).expect("whole blocks").div_ceil(align) * align;
        }
        let data_start = (out.len() as u64).div_ceil(align) * align;
        out.resize(data_start as usize, 0);
        (out, data_start + offset)
    }

    /// The whole file in memory (tensor data zero-filled).
    pub fn to_bytes(&self) -> Vec<u8> {
        let (mut out, size) = self.header();
        out.resize(size as usize, 0);
        out
    }

    /// The model split in `n` shards as llama.cpp's `gguf-split` writes them: the tensors in
    /// order, cut where each shard holds about an `n`th of the bytes; the first shard keeps
    /// the metadata; every shard says `split.no` (0-based) and `split.count`, the first also
    /// `split.tensors.count`.
    pub fn split(&self, n: u16) -> Vec<GgufWriter> {
        let n = n.max(1);
        let bytes = |(_, dims, ty): &(String, Vec<u64>, GgmlType)| {
            ty.bytes_for(dims.iter().product()).expect("whole blocks")
        };
        let total: u64 = self.tensors.iter().map(bytes).sum();
        let mut shards: Vec<GgufWriter> = (0..n)
            .map(|i| GgufWriter {
                version: self.version,
                metadata: if i == 0 {
                    self.metadata.clone()
                } else {
                    vec![]
                },
                tensors: vec![],
            })
            .collect();
        let mut before = 0u64;
        for t in &self.tensors {
            // The shard the middle of this tensor's bytes falls in.
            let middle = before + bytes(t) / 2;
            let i = ((u128::from(middle) * u128::from(n)) / u128::from(total.max(1))) as usize;
            shards[i.min(usize::from(n) - 1)].tensors.push(t.clone());
            before += bytes(t);
        }
        let tensor_count = self.tensors.len() as i32;
        for (i, s) in shards.iter_mut().enumerate() {
            s.metadata
                .push(("split.no".into(), MetaValue::U16(i as u16)));
            s.metadata.push(("split.count".into(), MetaValue::U16(n)));
            if i == 0 {
                s.metadata
                    .push(("split.tensors.count".into(), MetaValue::I32(tensor_count)));
            }
        }
        shards
    }

    /// Write the model as `n` shards `<dir>/<prefix>-0000k-of-0000n.gguf` (sparse); their paths,
    /// the first first.
    pub fn write_split(&self, dir: &Path, prefix: &str, n: u16) -> io::Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        for (i, shard) in self.split(n).iter().enumerate() {
            let path = dir.join(format!("{prefix}-{:05}-of-{n:05}.gguf", i + 1));
            shard.write(&path)?;
            paths.push(path);
        }
        Ok(paths)
    }

    /// Write the file; the tensor data is a hole (zeros, no disk used).
    pub fn write(&self, path: &Path) -> io::Result<u64> {
        let (header, size) = self.header();
        let mut f = File::create(path)?;
        f.write_all(&header)?;
        f.set_len(size)?;
        Ok(size)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn type_of(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.push(*x as u8),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Array(a) => {
            out.extend_from_slice(&a.elem_type.to_le_bytes());
            out.extend_from_slice(&(a.values.len() as u64).to_le_bytes());
            for x in &a.values {
                put_value(out, x);
            }
        }
    }
}
