use super::*;

/// A scratch cache: `files` are `repo`, path-in-repo pairs, written under
/// one snapshot each with `refs/main` pointing at it.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str, files: &[(&str, &str)]) -> Scratch {
        let root = std::env::temp_dir().join(format!("vram-llm-hub-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let commit = "0123456789abcdef0123456789abcdef01234567";
        for (repo, name) in files {
            let dir = root.join(names::repo_folder(repo));
            std::fs::create_dir_all(dir.join("refs")).unwrap();
            std::fs::write(dir.join("refs/main"), format!("{commit}\n")).unwrap();
            let file = dir.join("snapshots").join(commit).join(name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, b"GGUF").unwrap();
        }
        Scratch(root)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_cache_folder_follows_llama_cpps_order() {
    let env = |vars: &'static [(&'static str, &'static str)]| move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
    assert_eq!(cache_dir_from(env(&[("HOME", "/h"), ("LLAMA_CACHE", "/l")])), Some(PathBuf::from("/l")));
    assert_eq!(cache_dir_from(env(&[("HOME", "/h"), ("HF_HOME", "/hf")])), Some(PathBuf::from("/hf/hub")));
    assert_eq!(cache_dir_from(env(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")])), Some(PathBuf::from("/x/huggingface/hub")));
    assert_eq!(cache_dir_from(env(&[("HOME", "/h"), ("LLAMA_CACHE", "")])), Some(PathBuf::from("/h/.cache/huggingface/hub")));
    assert_eq!(cache_dir_from(env(&[])), None);
}

#[test]
fn cached_models_are_listed_by_repo_and_quant() {
    let s = Scratch::new("list", &[
        ("ggml-org/tinygemma3-GGUF", "tinygemma3-Q8_0.gguf"),
        ("ggml-org/tinygemma3-GGUF", "mmproj-tinygemma3-F16.gguf"),
        ("ggml-org/tinygemma3-GGUF", "README.md"),
        ("o/big", "big-Q4_K_M-00001-of-00002.gguf"),
        ("o/big", "big-Q4_K_M-00002-of-00002.gguf"),
        ("o/notag", "model.gguf"),
        ("o/two", "two-Q4_K_M.gguf"),
        ("o/two", "sub/two-Q4_K_M.gguf"),
    ]);
    let names: Vec<String> = cached_models(&s.0).iter().map(|m| m.name.name()).collect();
    assert_eq!(names, ["ggml-org/tinygemma3-GGUF:Q8_0", "o/big:Q4_K_M", "o/two:Q4_K_M"]);
    let big = &cached_models(&s.0)[1];
    assert!(big.path.ends_with("big-Q4_K_M-00001-of-00002.gguf"), "{}", big.path.display());
}

#[test]
fn a_repo_without_a_valid_ref_is_skipped() {
    let s = Scratch::new("ref", &[("o/a", "a-Q8_0.gguf")]);
    std::fs::write(s.0.join("models--o--a/refs/main"), "not-a-commit").unwrap();
    assert!(cached_models(&s.0).is_empty());
    assert!(cached_models(Path::new("/no/such/cache")).is_empty());
}

#[test]
fn resolve_picks_the_tag_else_q4_k_m_else_q8_0_else_the_first() {
    let s = Scratch::new("pick", &[
        ("o/m", "m-F16.gguf"),
        ("o/m", "m-Q8_0.gguf"),
        ("o/m", "m-Q4_K_M-00001-of-00002.gguf"),
        ("o/m", "m-Q4_K_M-00002-of-00002.gguf"),
        ("o/m", "mmproj-m-Q4_K_M.gguf"),
        ("o/f", "f-F16.gguf"),
    ]);
    let pick = |name: &str| resolve(&s.0, &RepoTag::parse(name).unwrap()).map(|p| p.file_name().unwrap().to_string_lossy().into_owned());
    assert_eq!(pick("o/m").as_deref(), Some("m-Q4_K_M-00001-of-00002.gguf"));
    assert_eq!(pick("o/m:q8_0").as_deref(), Some("m-Q8_0.gguf"));
    assert_eq!(pick("o/m:F16").as_deref(), Some("m-F16.gguf"));
    assert_eq!(pick("o/m:Q2_K"), None);
    assert_eq!(pick("o/f").as_deref(), Some("f-F16.gguf"));
    assert_eq!(pick("o/absent"), None);
}
