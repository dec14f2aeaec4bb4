//! llama.cpp's names of split GGUF models: `<prefix>-00001-of-00003.gguf` … (`gguf-split` writes
//! them as `-%05d-of-%05d.gguf`; `llama_split_prefix` reads them back). The server is given the
//! first shard and opens the others from beside it by this name.

/// What to do about a checksum given for a split model.
pub const SPLIT_CHECKSUM_HELP: &str = "remove `checksum`: each shard of an `hf:` ref is verified against the sha256 the hub gives for it, and every shard's digest is recorded; pin the content with `@COMMIT` in the ref";

/// A file name (or a path, or a URL path) that names one shard of a split model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitName {
    /// Everything before `-NNNNN-of-NNNNN.gguf` (a directory, a URL base included).
    pub prefix: String,
    /// 1-based.
    pub index: u32,
    /// At least 2: a `-00001-of-00001` name is a whole model.
    pub count: u32,
}

impl SplitName {
    /// `name` when it ends in `-NNNNN-of-NNNNN.gguf` (five digits each, `.gguf` in any case)
    /// with 1 ≤ index ≤ count and count ≥ 2.
    pub fn parse(name: &str) -> Option<SplitName> {
        let lower = name.to_ascii_lowercase();
        let stem = lower.strip_suffix(".gguf")?;
        // `-NNNNN-of-NNNNN`: 15 bytes.
        let tail = stem.get(stem.len().checked_sub(15)?..)?;
        let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
        let (index, count) = (tail.get(1..6)?, tail.get(10..15)?);
        if !tail.starts_with('-') || tail.get(6..10)? != "-of-" || !digits(index) || !digits(count)
        {
            return None;
        }
        let (index, count): (u32, u32) = (index.parse().ok()?, count.parse().ok()?);
        if count < 2 || index == 0 || index > count {
            return None;
        }
        Some(SplitName {
            prefix: name[..stem.len() - 15].to_string(),
            index,
            count,
        })
    }

    /// The name of shard `index` (1-based) of the same set.
    pub fn shard(&self, index: u32) -> String {
        format!("{}-{index:05}-of-{:05}.gguf", self.prefix, self.count)
    }

    /// The names of every shard, the first first.
    pub fn shards(&self) -> Vec<String> {
        (1..=self.count).map(|i| self.shard(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_llama_cpp_split_names() {
        let s = SplitName::parse("dir/Llama-3.3-70B-Q4_K_M-00002-of-00003.gguf").unwrap();
        assert_eq!(s.prefix, "dir/Llama-3.3-70B-Q4_K_M");
        assert_eq!((s.index, s.count), (2, 3));
        assert_eq!(s.shard(1), "dir/Llama-3.3-70B-Q4_K_M-00001-of-00003.gguf");
        assert_eq!(s.shards().len(), 3);
        assert!(SplitName::parse("x-00001-OF-00002.GGUF").is_some());
    }

    #[test]
    fn other_names_are_whole_models() {
        for name in [
            "x.gguf",
            "x-00001-of-00001.gguf",
            "x-00004-of-00003.gguf",
            "x-00000-of-00003.gguf",
            "x-0001-of-00003.gguf",
            "x-00001-of-00003.bin",
            "x-00001_of-00003.gguf",
            "00001-of-00003.gguf",
        ] {
            assert_eq!(SplitName::parse(name), None, "{name}");
        }
    }
}
