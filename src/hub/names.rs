//! Hugging Face names as llama.cpp reads them: `owner/repo[:TAG]`, the
//! cache's folder names, and the quant tag and split part of a GGUF file name.

/// `owner/repo` with an optional quant tag (`Q4_K_M`, `F16`...), as `-hf`
/// and llama-server's router name models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoTag {
    pub repo: String,
    /// Upper case; empty when none was given.
    pub tag: String,
}

impl RepoTag {
    /// Parse `owner/repo[:TAG]`; the error names what is wrong.
    pub fn parse(text: &str) -> Result<RepoTag, String> {
        let (repo, tag) = match text.rsplit_once(':') {
            Some((repo, tag)) => (repo, tag),
            None => (text, ""),
        };
        if !is_valid_repo_id(repo) {
            return Err(format!(
                "`{text}` is not a Hugging Face repository: expected owner/name[:QUANT] (letters, digits, `_`, and `.`/`-` between them)"
            ));
        }
        if !tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{text}`: the quant tag `{tag}` may hold only letters, digits and `_`"));
        }
        Ok(RepoTag { repo: repo.to_string(), tag: tag.to_ascii_uppercase() })
    }

    /// The name a model gets: `owner/repo:TAG` (llama-server's router names).
    pub fn name(&self) -> String {
        if self.tag.is_empty() {
            self.repo.clone()
        } else {
            format!("{}:{}", self.repo, self.tag)
        }
    }
}

/// llama.cpp's rule: exactly one `/`; `[A-Za-z0-9_]` anywhere; `/`, `.` and
/// `-` only between two of those.
pub fn is_valid_repo_id(repo: &str) -> bool {
    let bytes = repo.as_bytes();
    let base = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut slashes = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if base(b) {
            continue;
        }
        if !matches!(b, b'/' | b'.' | b'-') {
            return false;
        }
        let before = i > 0 && base(bytes[i - 1]);
        let after = bytes.get(i + 1).is_some_and(|&n| base(n));
        if !before || !after {
            return false;
        }
        slashes += usize::from(b == b'/');
    }
    slashes == 1
}

/// The cache folder of a repository: `models--owner--repo`.
pub fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// The repository a cache folder holds, when it is a model folder.
pub fn folder_repo(folder: &str) -> Option<String> {
    let repo = folder.strip_prefix("models--")?.replace("--", "/");
    is_valid_repo_id(&repo).then_some(repo)
}

/// What a GGUF file name says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufName {
    /// The name without `.gguf` and without the split suffix (tag included).
    pub prefix: String,
    /// The quant tag after the last `-` or `.` (upper case), or empty.
    pub tag: String,
    /// Split part (1-based) and count; 1 of 1 for a single file.
    pub part: u32,
    pub parts: u32,
}

/// Parse `dir/name-Q4_K_M-00001-of-00003.gguf`; None when it is not `.gguf`.
pub fn gguf_name(path: &str) -> Option<GgufName> {
    let mut prefix = path.strip_suffix(".gguf").or_else(|| path.strip_suffix(".GGUF"))?.to_string();
    let (mut part, mut parts) = (1, 1);
    if let Some((head, total)) = prefix.rsplit_once("-of-") {
        if let Some((stem, index)) = head.rsplit_once('-') {
            let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
            if digits(index) && digits(total) && !stem.is_empty() {
                part = index.parse().unwrap_or(1);
                parts = total.parse().unwrap_or(1);
                prefix = stem.to_string();
            }
        }
    }
    let tag = match prefix.rfind(['-', '.']) {
        Some(at) => {
            let tail = &prefix[at + 1..];
            let ok = !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if ok {
                tail.to_ascii_uppercase()
            } else {
                String::new()
            }
        }
        None => String::new(),
    };
    Some(GgufName { prefix, tag, part, parts })
}

/// A file that is a model's weights, not a projector or a draft sidecar.
pub fn is_model_file(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    file.ends_with(".gguf") && !["mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-"].iter().any(|p| file.contains(p))
}

/// The file `-hf owner/repo[:TAG]` means among a repository's file names
/// (its index): the tag's model file, else (no tag) `Q4_K_M`, then `Q8_0`,
/// then the first model file; always the first part of a split model.
pub fn pick_model(names: &[&str], tag: &str) -> Option<usize> {
    let first_part = |name: &str| gguf_name(name).is_some_and(|g| g.part == 1) && is_model_file(name);
    let with_tag = |t: &str| {
        let t = t.to_ascii_uppercase();
        names.iter().position(|name| {
            let upper = name.to_ascii_uppercase();
            first_part(name) && [format!("{t}."), format!("{t}-")].iter().any(|p| upper.contains(p.as_str()))
        })
    };
    if !tag.is_empty() {
        return with_tag(tag);
    }
    with_tag("Q4_K_M").or_else(|| with_tag("Q8_0")).or_else(|| names.iter().position(|n| first_part(n)))
}

/// Every part of the model whose first file is `first` (itself alone when
/// it is not split): `x-00001-of-00003.gguf` gives parts 1, 2 and 3.
pub fn split_parts(first: &str) -> Vec<String> {
    match gguf_name(first) {
        Some(g) if g.parts > 1 => {
            let ext = &first[first.len() - ".gguf".len()..];
            (1..=g.parts).map(|i| format!("{}-{i:05}-of-{:05}{ext}", g.prefix, g.parts)).collect()
        }
        _ => vec![first.to_string()],
    }
}

/// The quant tags a repository's files offer, for an error that lists them.
pub fn quant_tags(names: &[&str]) -> Vec<String> {
    let mut tags: Vec<String> = names
        .iter()
        .filter(|n| is_model_file(n))
        .filter_map(|n| gguf_name(n))
        .filter(|g| g.part == 1 && !g.tag.is_empty())
        .map(|g| g.tag)
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_follow_llama_cpps_rule() {
        for ok in ["ggml-org/tinygemma3-GGUF", "a/b", "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "x_y/z.w"] {
            assert!(is_valid_repo_id(ok), "{ok}");
        }
        for bad in ["", "noslash", "a/b/c", "/a", "a/", "a//b", "a/-b", "a/b-", "a b/c", "../x", "a/b:c"] {
            assert!(!is_valid_repo_id(bad), "{bad}");
        }
    }

    #[test]
    fn repo_tags_parse_and_print() {
        let r = RepoTag::parse("ggml-org/tinygemma3-GGUF:q8_0").unwrap();
        assert_eq!((r.repo.as_str(), r.tag.as_str()), ("ggml-org/tinygemma3-GGUF", "Q8_0"));
        assert_eq!(r.name(), "ggml-org/tinygemma3-GGUF:Q8_0");
        assert_eq!(RepoTag::parse("a/b").unwrap().name(), "a/b");
        let e = RepoTag::parse("just-a-name").unwrap_err();
        assert!(e.contains("owner/name"), "{e}");
        assert!(RepoTag::parse("a/b:Q4-K").unwrap_err().contains("quant tag"));
    }

    #[test]
    fn folders_map_to_repos_and_back() {
        assert_eq!(repo_folder("ggml-org/x-GGUF"), "models--ggml-org--x-GGUF");
        assert_eq!(folder_repo("models--ggml-org--x-GGUF").as_deref(), Some("ggml-org/x-GGUF"));
        assert_eq!(folder_repo("datasets--a--b"), None);
        assert_eq!(folder_repo("models--a--b--c"), None);
    }

    #[test]
    fn gguf_names_give_tag_and_split_part() {
        let n = gguf_name("tinygemma3-Q8_0.gguf").unwrap();
        assert_eq!((n.tag.as_str(), n.part, n.parts), ("Q8_0", 1, 1));
        let n = gguf_name("sub/Big-Model.q4_k_m-00002-of-00003.gguf").unwrap();
        assert_eq!((n.prefix.as_str(), n.tag.as_str(), n.part, n.parts), ("sub/Big-Model.q4_k_m", "Q4_K_M", 2, 3));
        assert_eq!(gguf_name("stories260K-f32.gguf").unwrap().tag, "F32");
        assert_eq!(gguf_name("model.gguf").unwrap().tag, "");
        assert_eq!(gguf_name("README.md"), None);
    }

    #[test]
    fn the_pick_prefers_the_tag_then_q4_k_m_and_takes_split_parts_whole() {
        let names = ["README.md", "mmproj-x-Q4_K_M.gguf", "x-Q8_0.gguf", "x-Q4_K_M-00002-of-00002.gguf", "x-Q4_K_M-00001-of-00002.gguf"];
        assert_eq!(pick_model(&names, ""), Some(4));
        assert_eq!(pick_model(&names, "q8_0"), Some(2));
        assert_eq!(pick_model(&names, "F16"), None);
        assert_eq!(split_parts(names[4]), vec!["x-Q4_K_M-00001-of-00002.gguf", "x-Q4_K_M-00002-of-00002.gguf"]);
        assert_eq!(split_parts("x-Q8_0.gguf"), vec!["x-Q8_0.gguf"]);
        assert_eq!(quant_tags(&names), vec!["Q4_K_M", "Q8_0"]);
    }

    #[test]
    fn projectors_and_drafts_are_not_models() {
        assert!(is_model_file("x/model-Q4_K_M.gguf"));
        assert!(!is_model_file("x/mmproj-model-f16.gguf"));
        assert!(!is_model_file("mtp-model-Q8_0.gguf"));
        assert!(!is_model_file("Qwen3-mtp-Q8_0.gguf"), "llama.cpp's rule: anywhere in the name");
        assert!(!is_model_file("model-imatrix.gguf"));
        assert!(!is_model_file("notes.txt"));
    }
}
