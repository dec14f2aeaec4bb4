//! Picking the model of `hf:ORG/REPO:QUANT` among a repository's files, as llama.cpp's `-hf
//! ORG/REPO:QUANT` does (`find_best_model` in `common/download.cpp`): a GGUF that is a model
//! (not a projector, an imatrix or a draft head) and whose path holds the tag, in any case,
//! followed by `.` or `-`; of a split model only the first shard is a candidate. Unlike
//! llama.cpp, which takes the first match, several matches are an error: the ref must say
//! which file it means.

use provision_plan::split_name::SplitName;

/// Names of files that sit beside models but are not one (llama.cpp skips them too).
const NOT_MODELS: &[&str] = &["mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-"];

/// Why no one file was picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantError {
    /// No model file has the tag: the tags the repository has.
    None { available: Vec<String> },
    /// Several model files have it: their paths.
    Several { matches: Vec<String> },
}

/// A GGUF model file of the repository that a server can be given (a whole model, or the
/// first shard of a split one).
fn is_model(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    name.ends_with(".gguf")
        && !NOT_MODELS.iter().any(|n| name.contains(n))
        && SplitName::parse(&name).is_none_or(|s| s.index == 1)
}

/// The quant tag of a model file, as llama.cpp reads it: the last `-`/`.`-separated word of
/// its name before the shard suffix and `.gguf`, upper-cased (`…-Q4_K_M-00001-of-00003.gguf`:
/// `Q4_K_M`).
pub fn tag_of(path: &str) -> Option<String> {
    let stem = match SplitName::parse(path) {
        Some(s) => s.prefix,
        None => path.get(..path.len().checked_sub(5)?)?.to_string(),
    };
    let name = stem.rsplit('/').next().unwrap_or(&stem);
    let tag = &name[name.rfind(['-', '.'])? + 1..];
    (!tag.is_empty() && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| tag.to_ascii_uppercase())
}

/// Whether `path` holds `quant` (any case) not inside a longer tag before it (`IQ4_XS` holds
/// neither `Q4_XS` nor `XS`) and followed by `.` or `-`.
fn holds(path: &str, quant: &str) -> bool {
    let (path, quant) = (path.to_ascii_lowercase(), quant.to_ascii_lowercase());
    path.match_indices(&quant).any(|(at, _)| {
        let before = path[..at].chars().next_back();
        let after = path[at + quant.len()..].chars().next();
        before.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_')
            && matches!(after, Some('.' | '-'))
    })
}

/// The model file of `files` (repository paths) that `quant` names: a whole GGUF or the first
/// shard of a split one.
pub fn pick(files: &[String], quant: &str) -> Result<String, QuantError> {
    let models: Vec<&String> = files.iter().filter(|f| is_model(f)).collect();
    let matches: Vec<String> = models
        .iter()
        .filter(|f| holds(f, quant))
        .map(|f| f.to_string())
        .collect();
    match matches.len() {
        1 => Ok(matches.into_iter().next().expect("one")),
        0 => {
            let mut available: Vec<String> = models.iter().filter_map(|f| tag_of(f)).collect();
            available.sort();
            available.dedup();
            Err(QuantError::None { available })
        }
        _ => Err(QuantError::Several { matches }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn picks_the_file_or_first_shard_of_the_tag() {
        let repo = files(&[
            "README.md",
            "Llama-3-8B-Q4_K_M.gguf",
            "Llama-3-8B-IQ4_XS.gguf",
            "Llama-3-8B-Q8_0.gguf",
            "mmproj-Llama-3-8B-Q8_0.gguf",
            "Q6_K/Llama-3-8B-Q6_K-00002-of-00002.gguf",
            "Q6_K/Llama-3-8B-Q6_K-00001-of-00002.gguf",
        ]);
        assert_eq!(pick(&repo, "q4_k_m").unwrap(), "Llama-3-8B-Q4_K_M.gguf");
        assert_eq!(pick(&repo, "Q8_0").unwrap(), "Llama-3-8B-Q8_0.gguf");
        assert_eq!(
            pick(&repo, "Q6_K").unwrap(),
            "Q6_K/Llama-3-8B-Q6_K-00001-of-00002.gguf"
        );
        assert_eq!(
            pick(&repo, "XS"),
            Err(QuantError::None {
                available: files(&["IQ4_XS", "Q4_K_M", "Q6_K", "Q8_0"])
            })
        );
        assert!(matches!(pick(&repo, "Q4_XS"), Err(QuantError::None { .. })));
    }

    #[test]
    fn several_matches_are_listed() {
        let repo = files(&[
            "a/m-Q4_0.gguf",
            "b/m-Q4_0.gguf",
            "m-Q4_0-00001-of-00002.gguf",
        ]);
        assert_eq!(
            pick(&repo, "Q4_0"),
            Err(QuantError::Several {
                matches: files(&[
                    "a/m-Q4_0.gguf",
                    "b/m-Q4_0.gguf",
                    "m-Q4_0-00001-of-00002.gguf"
                ])
            })
        );
    }

    #[test]
    fn tags_as_llama_cpp_reads_them() {
        assert_eq!(
            tag_of("x/L-70B-Q4_K_M-00001-of-00003.gguf").as_deref(),
            Some("Q4_K_M")
        );
        assert_eq!(
            tag_of("qwen2.5-0.5b-instruct-q4_k_m.gguf").as_deref(),
            Some("Q4_K_M")
        );
        assert_eq!(tag_of("model.f16.gguf").as_deref(), Some("F16"));
        assert_eq!(tag_of("model.gguf"), None);
    }
}
