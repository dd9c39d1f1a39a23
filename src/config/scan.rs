//! `--models-dir`: find GGUF models below a folder.

use std::path::{Path, PathBuf};

/// Every model file below `dir`, sorted: `.gguf` files, skipping
/// multimodal projectors (`mmproj*`) and all but the first part of split
/// models (`-00001-of-0000N.gguf`).
pub fn scan_models_dir(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    walk(dir, &mut found, 0).map_err(|e| format!("--models-dir {}: {e}", dir.display()))?;
    found.sort();
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>, depth: usize) -> std::io::Result<()> {
    // Deep enough for any sane layout; stops symlink loops.
    if depth > 16 {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, found, depth + 1)?;
        } else if is_model_file(&path) {
            found.push(path);
        }
    }
    Ok(())
}

fn is_model_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    let lower = name.to_ascii_lowercase();
    if !lower.ends_with(".gguf") || lower.starts_with("mmproj") {
        return false;
    }
    // The split part as the hub cache reads it (`x-00002-of-00003.gguf` -> 2).
    crate::hub::names::gguf_name(&lower).is_some_and(|g| g.part == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_models_recursively_skipping_projectors_and_later_split_parts() {
        let root = std::env::temp_dir().join(format!("vram-llm-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        for f in [
            "one.gguf",
            "a/two.GGUF",
            "a/mmproj-two.gguf",
            "a/b/big-00001-of-00002.gguf",
            "a/b/big-00002-of-00002.gguf",
            "notes.txt",
        ] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let found: Vec<String> = scan_models_dir(&root)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(found, vec!["a/b/big-00001-of-00002.gguf", "a/two.GGUF", "one.gguf"]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_dir_names_itself() {
        let e = scan_models_dir(Path::new("/no/such/dir")).unwrap_err();
        assert!(e.contains("/no/such/dir"), "{e}");
    }
}
