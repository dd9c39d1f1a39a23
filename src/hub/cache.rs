//! The Hugging Face hub cache, read as llama.cpp and huggingface_hub lay it
//! out: `<cache>/models--owner--repo/refs/main` holds a commit id and
//! `snapshots/<commit>/...` the files (links into `blobs/`).

use std::path::{Path, PathBuf};

use super::names::{self, RepoTag};

/// The cache folder, from the first of these that is set (llama.cpp's order):
/// `LLAMA_CACHE`, `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, `HF_HOME/hub`,
/// `XDG_CACHE_HOME/huggingface/hub`, `HOME/.cache/huggingface/hub`.
pub fn cache_dir_from(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    set("LLAMA_CACHE")
        .or_else(|| set("HF_HUB_CACHE"))
        .or_else(|| set("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| set("HF_HOME").map(|p| p.join("hub")))
        .or_else(|| set("XDG_CACHE_HOME").map(|p| p.join("huggingface/hub")))
        .or_else(|| set("HOME").map(|p| p.join(".cache/huggingface/hub")))
}

/// The cache folder of this process's environment.
pub fn cache_dir() -> Option<PathBuf> {
    cache_dir_from(|name| std::env::var(name).ok())
}

/// One file of a cached snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    pub repo: String,
    /// Path inside the repository, `/`-separated.
    pub name: String,
    pub path: PathBuf,
}

/// A model the cache holds, named as llama-server's router names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    pub name: RepoTag,
    /// The model file (the first part of a split model).
    pub path: PathBuf,
}

/// The commit a repository folder's refs point at: `refs/main`, else the
/// first other ref holding a commit id.
fn cached_ref(repo_dir: &Path) -> Option<String> {
    let mut refs: Vec<(String, String)> = std::fs::read_dir(repo_dir.join("refs"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            let commit = text.lines().next()?.trim().to_string();
            let hex = commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit());
            hex.then(|| (e.file_name().to_string_lossy().into_owned(), commit))
        })
        .collect();
    refs.sort();
    let main = refs.iter().position(|(name, _)| name == "main").unwrap_or(0);
    (!refs.is_empty()).then(|| refs.swap_remove(main).1)
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        // Snapshots hold links into blobs/; follow them for files only.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && depth < 8 {
            walk(root, &path, depth + 1, out);
        } else if path.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let name = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            out.push((name, path));
        }
    }
}

/// Every file of every cached repository (or of `only` one), sorted.
pub fn cached_files(cache: &Path, only: Option<&str>) -> Vec<CachedFile> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(cache) else { return files };
    let mut repos: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| Some((names::folder_repo(e.file_name().to_str()?)?, e.path())))
        .filter(|(repo, _)| only.is_none_or(|o| o == repo))
        .collect();
    repos.sort();
    for (repo, dir) in repos {
        let Some(commit) = cached_ref(&dir) else { continue };
        let snapshot = dir.join("snapshots").join(commit);
        let mut found = Vec::new();
        walk(&snapshot, &snapshot, 0, &mut found);
        found.sort();
        files.extend(found.into_iter().map(|(name, path)| CachedFile { repo: repo.clone(), name, path }));
    }
    files
}

/// The models the cache holds, one per repository and quant tag (files
/// without a tag, projectors and later split parts left out), as
/// llama-server's router lists them.
pub fn cached_models(cache: &Path) -> Vec<CachedModel> {
    let mut out: Vec<CachedModel> = Vec::new();
    for f in cached_files(cache, None) {
        let Some(g) = names::gguf_name(&f.name) else { continue };
        if g.part != 1 || g.tag.is_empty() || !names::is_model_file(&f.name) {
            continue;
        }
        let name = RepoTag { repo: f.repo.clone(), tag: g.tag };
        if !out.iter().any(|m| m.name == name) {
            out.push(CachedModel { name, path: f.path });
        }
    }
    out
}

/// The file `-hf owner/repo[:TAG]` means among a repository's cached files
/// (`names::pick_model`'s rule).
pub fn pick_model<'a>(files: &'a [CachedFile], tag: &str) -> Option<&'a CachedFile> {
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    names::pick_model(&names, tag).map(|i| &files[i])
}

/// Deletes a cached model: the snapshot links of every part of the model
/// whose first part is `first` (a path under `cache`), and the blobs they
/// lead to. Returns the files removed; an error for a path outside the
/// cache's snapshots.
pub fn delete_model(cache: &Path, first: &Path) -> Result<usize, String> {
    let snapshots = first
        .ancestors()
        .find(|p| p.parent().and_then(Path::file_name).is_some_and(|n| n == "snapshots"))
        .filter(|commit| commit.starts_with(cache))
        .ok_or_else(|| format!("{} is not a file of the Hugging Face cache ({})", first.display(), cache.display()))?;
    let rel = first.strip_prefix(snapshots).map_err(|e| e.to_string())?.to_string_lossy().into_owned();
    let mut removed = 0;
    for part in names::split_parts(&rel) {
        let link = snapshots.join(&part);
        if let Ok(blob) = std::fs::canonicalize(&link) {
            if blob != link && std::fs::remove_file(&blob).is_ok() {
                removed += 1;
            }
        }
        if std::fs::remove_file(&link).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// The cached file for `owner/repo[:TAG]`, or for one `file` of the
/// repository when given, when the cache has it.
pub fn find(cache: &Path, wanted: &RepoTag, file: Option<&str>) -> Option<PathBuf> {
    match file {
        Some(name) => cached_files(cache, Some(&wanted.repo)).into_iter().find(|f| f.name == name).map(|f| f.path),
        None => resolve(cache, wanted),
    }
}

/// The cached file for `owner/repo[:TAG]`, when the cache has it.
pub fn resolve(cache: &Path, wanted: &RepoTag) -> Option<PathBuf> {
    let files = cached_files(cache, Some(&wanted.repo));
    pick_model(&files, &wanted.tag).map(|f| f.path.clone())
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
