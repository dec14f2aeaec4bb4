//! What a ref names, `git ls-remote` output, and the tags nearest a mistyped ref.

/// How a configured ref is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// 40 hex digits: a commit, known without the network.
    FullSha,
    /// 7 to 39 hex digits: a tag or branch of that name if the remote has one, else an
    /// abbreviated commit.
    AbbreviatedSha,
    /// A tag or branch name (or a full `refs/…` name).
    Name,
}

impl RefKind {
    pub fn of(r: &str) -> RefKind {
        let hex = !r.is_empty() && r.chars().all(|c| c.is_ascii_hexdigit());
        match r.len() {
            40 if hex => RefKind::FullSha,
            7..=39 if hex => RefKind::AbbreviatedSha,
            _ => RefKind::Name,
        }
    }

    pub fn is_sha(self) -> bool {
        self != RefKind::Name
    }
}

/// `(sha, refname)` pairs of `git ls-remote` output.
pub fn parse_ls_remote(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let (sha, name) = l.split_once('\t')?;
            Some((sha.trim().to_string(), name.trim().to_string()))
        })
        .collect()
}

/// The commit `r` names in ls-remote output: a peeled annotated tag, a tag, a branch, a full
/// ref name, or `HEAD` — in that order.
pub fn resolve_in(refs: &[(String, String)], r: &str) -> Option<String> {
    resolve_ref(refs, r).map(|(sha, _)| sha)
}

/// Like [`resolve_in`], with the name of the ref that matched (`refs/tags/v1^{}`, …).
pub fn resolve_ref<'a>(refs: &'a [(String, String)], r: &str) -> Option<(String, &'a str)> {
    let wanted = [
        format!("refs/tags/{r}^{{}}"),
        format!("refs/tags/{r}"),
        format!("refs/heads/{r}"),
        format!("{r}^{{}}"),
        r.to_string(),
    ];
    wanted.iter().find_map(|w| {
        refs.iter()
            .find(|(_, name)| name == w && (w.starts_with("refs/") || w == "HEAD"))
            .map(|(sha, name)| (sha.clone(), name.as_str()))
    })
}

/// Tag names in ls-remote output (peeled duplicates dropped).
pub fn tags_in(refs: &[(String, String)]) -> Vec<String> {
    let mut tags: Vec<String> = refs
        .iter()
        .filter_map(|(_, n)| n.strip_prefix("refs/tags/"))
        .filter(|n| !n.ends_with("^{}"))
        .map(String::from)
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

/// Up to five of `candidates` nearest `wanted` by edit distance (ties by name), only those
/// within half of the longer name's length.
pub fn nearest(wanted: &str, candidates: &[String]) -> Vec<String> {
    let mut scored: Vec<(usize, &String)> = candidates
        .iter()
        .map(|c| (strsim::levenshtein(wanted, c), c))
        .filter(|(d, c)| *d <= wanted.len().max(c.len()).div_ceil(2))
        .collect();
    scored.sort();
    scored.into_iter().take(5).map(|(_, c)| c.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_kinds() {
        assert_eq!(RefKind::of(&"a".repeat(40)), RefKind::FullSha);
        assert_eq!(RefKind::of("703f9e3"), RefKind::AbbreviatedSha);
        assert_eq!(RefKind::of("b4567"), RefKind::Name);
        assert_eq!(RefKind::of("master"), RefKind::Name);
        assert_eq!(RefKind::of(&"g".repeat(40)), RefKind::Name);
        assert_eq!(RefKind::of(&"a".repeat(41)), RefKind::Name);
    }

    #[test]
    fn resolution_order() {
        let refs = parse_ls_remote(
            "111\tHEAD\n222\trefs/heads/main\n333\trefs/tags/v1\n444\trefs/tags/v1^{}\n\
             555\trefs/tags/main\n666\trefs/heads/feature/x\n777\trefs/tags/lightweight\n",
        );
        assert_eq!(resolve_in(&refs, "v1").as_deref(), Some("444"));
        assert_eq!(resolve_in(&refs, "lightweight").as_deref(), Some("777"));
        assert_eq!(
            resolve_in(&refs, "main").as_deref(),
            Some("555"),
            "tags first"
        );
        assert_eq!(resolve_in(&refs, "feature/x").as_deref(), Some("666"));
        assert_eq!(resolve_in(&refs, "refs/heads/main").as_deref(), Some("222"));
        assert_eq!(resolve_in(&refs, "HEAD").as_deref(), Some("111"));
        assert_eq!(resolve_in(&refs, "x"), None);
        assert_eq!(
            resolve_ref(&refs, "v1"),
            Some(("444".to_string(), "refs/tags/v1^{}"))
        );
        assert_eq!(
            resolve_ref(&refs, "feature/x"),
            Some(("666".to_string(), "refs/heads/feature/x"))
        );
        assert_eq!(tags_in(&refs), ["lightweight", "main", "v1"]);
    }

    #[test]
    fn nearest_tags() {
        let tags: Vec<String> = ["b4567", "b4568", "b4600", "v1.0.0", "b1", "release"]
            .map(String::from)
            .to_vec();
        assert_eq!(nearest("b4576", &tags), ["b4567", "b4568", "b4600"]);
        assert_eq!(nearest("v1.0", &tags), ["v1.0.0"]);
        assert!(nearest("zzzzzzzzzz", &tags).is_empty());
    }
}
