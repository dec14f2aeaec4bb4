//! A GGUF header reader: version, metadata and tensor infos, without reading tensor data.
//!
//! Every length read from the file is checked against the bytes that are left before anything
//! is allocated, so a truncated or hostile file gives an error, never a panic or a huge
//! allocation (see the proptest in `tests/gguf_props.rs` and the cargo-fuzz target in `fuzz/`).
//! Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// `GGUF` read as a little-endian u32.
const MAGIC: [u8; 4] = *b"GGUF";
/// Default alignment of the tensor data (`general.alignment` overrides it).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Arrays longer than this are counted but their values are not kept (token lists, merges).
const KEEP_ARRAY_MAX: u64 = 4096;
/// Dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;

/// Why a GGUF header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("could not read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("not a GGUF file: it starts with {found:?}, not \"GGUF\"")]
    NotGguf { found: String },
    #[error("the GGUF file is big-endian; llama.cpp on this machine needs a little-endian GGUF")]
    BigEndian,
    #[error("GGUF version {0} is not supported (only versions 2 and 3 are)")]
    UnsupportedVersion(u32),
    #[error("the GGUF file is truncated: {what} needs {needed} bytes at offset {offset}, but only {left} are left (an incomplete download?)")]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        left: u64,
    },
    #[error("the GGUF file is malformed: {what} (at offset {offset})")]
    Invalid { what: String, offset: u64 },
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(MetaArray),
}

/// An array value. Values are kept only for arrays of at most 4096 numbers or booleans;
/// longer arrays and arrays of strings keep their length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetaArray {
    /// GGUF value type of the elements (0..=12).
    pub elem_type: u32,
    pub len: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<MetaValue>,
}

impl MetaValue {
    /// The value as an unsigned integer (any integer type that is not negative).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// An integer, or an array of integers (per-layer values), as a list.
    pub fn as_u64_list(&self) -> Option<Vec<u64>> {
        match self {
            MetaValue::Array(a) if !a.values.is_empty() => {
                a.values.iter().map(MetaValue::as_u64).collect()
            }
            v => v.as_u64().map(|x| vec![x]),
        }
    }
}

/// A ggml tensor type and its block layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GgmlType {
    pub id: u32,
    pub name: &'static str,
    /// Elements per block.
    pub block_size: u64,
    /// Bytes per block.
    pub type_size: u64,
}

/// The ggml types a GGUF may hold (ids that were removed from ggml are absent). Same table as
/// `GGML_QUANT_SIZES` in the `gguf` Python package.
const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

impl GgmlType {
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GGML_TYPES
            .iter()
            .find(|t| t.0 == id)
            .map(|&(id, name, block_size, type_size)| GgmlType {
                id,
                name,
                block_size,
                type_size,
            })
    }

    /// By name, case-insensitive (`f16`, `q8_0`): for `--cache-type-k` values.
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GGML_TYPES
            .iter()
            .find(|t| t.1.eq_ignore_ascii_case(name))
            .and_then(|t| GgmlType::from_id(t.0))
    }

    /// Bytes for `n` elements (`n` a multiple of the block size), `None` on overflow.
    pub fn bytes_for(&self, n: u64) -> Option<u64> {
        if !n.is_multiple_of(self.block_size) {
            return None;
        }
        (n / self.block_size).checked_mul(self.type_size)
    }
}

/// One tensor of the file: its name, shape, type and where its data is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorInfo {
    pub name: String,
    /// ne0 first (the innermost dimension), as ggml counts them.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Size of the data.
    pub n_bytes: u64,
}

/// A parsed GGUF header.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gguf {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Where the tensor data starts in the file.
    pub data_offset: u64,
    pub file_size: u64,
}

/// How many bytes the header reader asks the file for at a time.
const HEADER_READ: usize = 64 << 10;

impl Gguf {
    /// Read the header of the file at `path`; the tensor data is not read, only checked to be
    /// within the file.
    pub fn open(path: &Path) -> Result<Gguf, GgufError> {
        let io_err = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let size = file.metadata().map_err(io_err)?.len();
        let mut r = Reader {
            // Small reads: only the header is wanted, and a file may be all tensor data after it.
            inner: BufReader::with_capacity(HEADER_READ, file),
            pos: 0,
            len: size,
        };
        parse(&mut r).map_err(|e| match e {
            GgufError::Io { source, .. } => io_err(source),
            e => e,
        })
    }

    /// Parse a whole GGUF file held in memory (or its first bytes: then it is truncated).
    pub fn parse_bytes(bytes: &[u8]) -> Result<Gguf, GgufError> {
        let mut r = Reader {
            inner: bytes,
            pos: 0,
            len: bytes.len() as u64,
        };
        parse(&mut r)
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// Sum of every tensor's data.
    pub fn weight_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_bytes).sum()
    }
}

struct Reader<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Reader<R> {
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn need(&self, what: &dyn Fn() -> String, n: u64) -> Result<(), GgufError> {
        if n > self.left() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos,
                needed: n,
                left: self.left(),
            });
        }
        Ok(())
    }

    fn bytes(&mut self, what: &dyn Fn() -> String, n: u64) -> Result<Vec<u8>, GgufError> {
        self.need(what, n)?;
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| match e.kind() {
                // The file shrank while we read it.
                io::ErrorKind::UnexpectedEof => GgufError::Truncated {
                    what: what(),
                    offset: self.pos,
                    needed: n,
                    left: 0,
                },
                _ => GgufError::Io {
                    path: PathBuf::new(),
                    source: e,
                },
            })?;
        self.pos += n;
        Ok(buf)
    }

    fn skip(&mut self, what: &dyn Fn() -> String, n: u64) -> Result<(), GgufError> {
        self.need(what, n)?;
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink()).map_err(|e| {
            GgufError::Io {
                path: PathBuf::new(),
                source: e,
            }
        })?;
        if copied != n {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos,
                needed: n,
                left: copied,
            });
        }
        self.pos += n;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let v = self.bytes(what, N as u64)?;
        Ok(v.try_into().expect("exact length"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let at = self.pos;
        let n = self.u64(what)?;
        let bytes = self.bytes(what, n)?;
        String::from_utf8(bytes).map_err(|_| GgufError::Invalid {
            what: format!("{} is not valid UTF-8", what()),
            offset: at,
        })
    }

    fn value(
        &mut self,
        ty: u32,
        what: &dyn Fn() -> String,
        depth: u32,
    ) -> Result<MetaValue, GgufError> {
        let at = self.pos;
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>(what)?[0]),
            1 => MetaValue::I8(self.array::<1>(what)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => MetaValue::U32(self.u32(what)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => {
                    return Err(GgufError::Invalid {
                        what: format!("{} is a bool with the value {b}", what()),
                        offset: at,
                    })
                }
            },
            8 => MetaValue::String(self.string(what)?),
            9 => {
                if depth > 0 {
                    return Err(GgufError::Invalid {
                        what: format!("{} is an array of arrays", what()),
                        offset: at,
                    });
                }
                let elem_type = self.u32(what)?;
                let len = self.u64(what)?;
                let min_size = match elem_type {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    _ => {
                        return Err(GgufError::Invalid {
                            what: format!("{} is an array of unknown type {elem_type}", what()),
                            offset: at,
                        })
                    }
                };
                self.need(what, len.saturating_mul(min_size))?;
                let keep = elem_type != 8 && len <= KEEP_ARRAY_MAX;
                let mut values = Vec::new();
                for i in 0..len {
                    let item = || format!("{}[{i}]", what());
                    if keep {
                        values.push(self.value(elem_type, &item, depth + 1)?);
                    } else if elem_type == 8 {
                        let n = self.u64(&item)?;
                        self.skip(&item, n)?;
                    } else {
                        self.skip(&item, min_size)?;
                    }
                }
                MetaValue::Array(MetaArray {
                    elem_type,
                    len,
                    values,
                })
            }
            10 => MetaValue::U64(self.u64(what)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            t => {
                return Err(GgufError::Invalid {
                    what: format!("{} has the unknown value type {t}", what()),
                    offset: at,
                })
            }
        })
    }
}

fn parse<R: Read>(r: &mut Reader<R>) -> Result<Gguf, GgufError> {
    let file_size = r.len;
    let version = header(r)?;
    let tensor_count = r.u64(&|| "the tensor count".into())?;
    let kv_count = r.u64(&|| "the metadata count".into())?;
    // Each key-value needs at least 12 bytes, each tensor info at least 24: reject counts the
    // file cannot hold before allocating anything for them.
    r.need(
        &|| format!("{kv_count} metadata entries"),
        kv_count.saturating_mul(12),
    )?;
    let metadata = metadata(r, kv_count)?;
    let alignment = alignment(&metadata, r.pos)?;
    r.need(
        &|| format!("{tensor_count} tensor infos"),
        tensor_count.saturating_mul(24),
    )?;
    let mut tensors = Vec::new();
    for i in 0..tensor_count {
        tensors.push(tensor_info(r, i, alignment)?);
    }
    let data_offset = r.pos.div_ceil(alignment).saturating_mul(alignment);
    check_data(&tensors, data_offset, file_size)?;
    Ok(Gguf {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
        file_size,
    })
}

/// The magic and the version (2 or 3); the version.
fn header<R: Read>(r: &mut Reader<R>) -> Result<u32, GgufError> {
    if r.left() < 4 {
        let found = r.bytes(&|| "the magic".into(), r.left())?;
        return Err(GgufError::NotGguf {
            found: String::from_utf8_lossy(&found).into_owned(),
        });
    }
    let magic = r.array::<4>(&|| "the magic".into())?;
    if magic != MAGIC {
        return Err(GgufError::NotGguf {
            found: String::from_utf8_lossy(&magic).into_owned(),
        });
    }
    let version = r.u32(&|| "the version".into())?;
    if version & 0xFFFF == 0 && version != 0 {
        // A small version number read with the wrong byte order.
        return Err(GgufError::BigEndian);
    }
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion(version));
    }
    Ok(version)
}

/// `kv_count` metadata entries, each key once.
fn metadata<R: Read>(
    r: &mut Reader<R>,
    kv_count: u64,
) -> Result<BTreeMap<String, MetaValue>, GgufError> {
    let mut metadata = BTreeMap::new();
    for i in 0..kv_count {
        let at = r.pos;
        let key = r.string(&|| format!("the key of metadata entry {i}"))?;
        let what = || format!("metadata `{key}`");
        let ty = r.u32(&what)?;
        let value = r.value(ty, &what, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(GgufError::Invalid {
                what: format!("metadata key `{key}` appears twice"),
                offset: at,
            });
        }
    }
    Ok(metadata)
}

/// `general.alignment` (a power of two), or the default; `pos`: where the metadata ends.
fn alignment(metadata: &BTreeMap<String, MetaValue>, pos: u64) -> Result<u64, GgufError> {
    Ok(match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() => a,
            _ => {
                return Err(GgufError::Invalid {
                    what: format!("general.alignment is {v:?}, not a power of two"),
                    offset: pos,
                })
            }
        },
    })
}

/// Tensor info `i`: its shape, type and data offset (aligned to `alignment`).
fn tensor_info<R: Read>(
    r: &mut Reader<R>,
    i: u64,
    alignment: u64,
) -> Result<TensorInfo, GgufError> {
    let at = r.pos;
    let name = r.string(&|| format!("the name of tensor {i}"))?;
    let what = || format!("tensor `{name}`");
    let n_dims = r.u32(&what)?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(GgufError::Invalid {
            what: format!(
                "{} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)",
                what()
            ),
            offset: at,
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(r.u64(&what)?);
    }
    let type_id = r.u32(&what)?;
    let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::Invalid {
        what: format!("{} has the unknown ggml type {type_id}", what()),
        offset: at,
    })?;
    let offset = r.u64(&what)?;
    let elements = dims
        .iter()
        .try_fold(1u64, |acc, d| acc.checked_mul(*d))
        .ok_or_else(|| GgufError::Invalid {
            what: format!("{} has dimensions {dims:?} that overflow", what()),
            offset: at,
        })?;
    if !dims[0].is_multiple_of(ggml_type.block_size) {
        return Err(GgufError::Invalid {
            what: format!(
                "{}: its first dimension {} is not a multiple of the {} block size {}",
                what(),
                dims[0],
                ggml_type.name,
                ggml_type.block_size
            ),
            offset: at,
        });
    }
    let n_bytes = ggml_type
        .bytes_for(elements)
        .ok_or_else(|| GgufError::Invalid {
            what: format!("{} is too large", what()),
            offset: at,
        })?;
    if !offset.is_multiple_of(alignment) {
        return Err(GgufError::Invalid {
            what: format!(
                "{}: its data offset {offset} is not aligned to {alignment}",
                what()
            ),
            offset: at,
        });
    }
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        n_bytes,
    })
}

/// Every tensor's data lies inside the file (of `file_size` bytes, data from `data_offset`).
fn check_data(tensors: &[TensorInfo], data_offset: u64, file_size: u64) -> Result<(), GgufError> {
    for t in tensors {
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|x| x.checked_add(t.n_bytes))
            .ok_or_else(|| GgufError::Invalid {
                what: format!("tensor `{}` has an offset that overflows", t.name),
                offset: data_offset,
            })?;
        if end > file_size {
            return Err(GgufError::Truncated {
                what: format!("the data of tensor `{}`", t.name),
                offset: data_offset + t.offset,
                needed: t.n_bytes,
                left: file_size.saturating_sub(data_offset + t.offset),
            });
        }
    }
    Ok(())
}
