//! Models named on the hub: `-hf owner/repo[:QUANT]` (downloaded by `fetch`
//! unless cached, with progress on a terminal, a line redrawn, or in the log
//! every 10 % otherwise) and, when nothing else names a model, every model of
//! the Hugging Face cache (llama-server's router with no model).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::hub::download::{fetch_model, OnProgress, Progress};
use crate::hub::remote::Hub;
use crate::hub::{self, RepoTag};

/// `--hf-repo owner/repo[:QUANT]` (with `--hf-file NAME`, that file of the
/// repository): the model's name (the text given, quant upper-cased) and its
/// cached file.
pub fn hf_model(repo: &str, file: Option<&str>, cache: Option<&Path>) -> Result<(String, PathBuf), String> {
    let wanted = RepoTag::parse(repo).map_err(|e| format!("--hf-repo {e}"))?;
    let Some(cache) = cache else {
        return Err("--hf-repo: no Hugging Face cache folder (set LLAMA_CACHE, HF_HUB_CACHE or HOME)".into());
    };
    let found = hub::cache::find(cache, &wanted, file);
    let what = match file {
        Some(name) => format!("file `{name}` of `{}`", wanted.repo),
        None if wanted.tag.is_empty() => format!("a model file of `{}`", wanted.repo),
        None => format!("a `{}` model file of `{}`", wanted.tag, wanted.repo),
    };
    let path = found.ok_or_else(|| {
        format!(
            "--hf-repo {repo}: the Hugging Face cache ({}) holds no {what}: `vram-llm pull {repo}` downloads it \
             (--offline downloads nothing), or pass --model PATH",
            cache.display()
        )
    })?;
    Ok((wanted.name(), path))
}

/// A `[[models]]` entry's `hf = "owner/repo[:QUANT]"` (and `hf_file`): its
/// cached file, or (not cached) where the repository's folder will be and
/// the source the scheduler fetches on the first request.
pub fn hub_entry(repo: &str, file: Option<&str>, cache: Option<&Path>) -> Result<(PathBuf, Option<crate::types::HubSource>), String> {
    let wanted = RepoTag::parse(repo).map_err(|e| format!("hf {e}"))?;
    let cache = cache.ok_or("hf: no Hugging Face cache folder (set LLAMA_CACHE, HF_HUB_CACHE or HOME)")?;
    Ok(match hub::cache::find(cache, &wanted, file) {
        Some(path) => (path, None),
        None => {
            let source = crate::types::HubSource { repo: repo.to_string(), file: file.map(str::to_string) };
            (cache.join(hub::names::repo_folder(&wanted.repo)), Some(source))
        }
    })
}

/// A `[[models]]` entry's `url`: its downloaded file, or (not yet) where it
/// will be and the source the scheduler fetches on the first request.
pub fn url_entry(url: &str, cache: Option<&Path>) -> Result<(PathBuf, Option<crate::types::HubSource>), String> {
    let cache = cache.ok_or("url: no cache folder for downloads (set LLAMA_CACHE, HF_HUB_CACHE or HOME)")?;
    let dest = crate::hub::download::url_dest(cache, url).map_err(|e| format!("url {e}"))?;
    let fetch = (!dest.is_file()).then(|| crate::types::HubSource { repo: url.to_string(), file: None });
    Ok((dest, fetch))
}

/// Every model of the cache, named `owner/repo:QUANT`.
pub fn cached(cache: Option<&Path>) -> Vec<(String, PathBuf)> {
    cache.map(hub::cached_models).unwrap_or_default().into_iter().map(|m| (m.name.name(), m.path)).collect()
}

/// The model's path in the cache, downloaded first unless it is there (or
/// `offline`, or HF_HUB_OFFLINE=1, forbids it).
pub async fn fetch(model: &str, file: Option<&str>, offline: bool) -> Result<PathBuf, String> {
    let terminal = std::io::stderr().is_terminal();
    let path = fetch_with(model, file, offline, printer(terminal, None)).await;
    if terminal {
        eprintln!();
    }
    path
}

/// `fetch` reporting to `on` (a download the scheduler runs: its fraction
/// done, 0.0 to 1.0, per file, beside log lines every 10 %).
pub async fn fetch_for_scheduler(model: &str, file: Option<&str>, on: crate::types::Progress) -> Result<PathBuf, String> {
    fetch_with(model, file, false, printer(false, Some(on))).await
}

async fn fetch_with(model: &str, file: Option<&str>, offline: bool, on: OnProgress) -> Result<PathBuf, String> {
    if model.starts_with("https://") || model.starts_with("http://") {
        let cache = hub::cache_dir().ok_or("no cache folder for downloads: set LLAMA_CACHE, HF_HUB_CACHE or HOME")?;
        return crate::hub::download::fetch_url(&Hub::from_env()?, &cache, model, offline_env(offline), &on).await;
    }
    let wanted = RepoTag::parse(model)?;
    let cache = hub::cache_dir().ok_or("no Hugging Face cache folder: set LLAMA_CACHE, HF_HUB_CACHE or HOME")?;
    let offline = offline_env(offline);
    let hub = Hub::from_env()?;
    let started = Instant::now();
    let path = fetch_model(&hub, &cache, &wanted, file, offline, &on).await?;
    tracing::info!(model = %wanted.name(), path = %path.display(), seconds = started.elapsed().as_secs_f64(), "model ready");
    Ok(path)
}

/// `--offline`, or HF_HUB_OFFLINE=1 as huggingface_hub reads it.
fn offline_env(flag: bool) -> bool {
    flag || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes"))
}

/// Redraws one line on a terminal (at most 10 times a second), else logs
/// each tenth of a file.
fn printer(terminal: bool, fraction: Option<crate::types::Progress>) -> OnProgress {
    let state: Mutex<(String, u64, Option<Instant>, Instant)> = Mutex::new((String::new(), 0, None, Instant::now()));
    Arc::new(move |p: &Progress| {
        if let (Some(report), Some(total)) = (&fraction, p.total.filter(|&t| t > 0)) {
            report(p.done as f32 / total as f32);
        }
        let mut s = state.lock();
        if s.0 != p.file {
            *s = (p.file.clone(), 0, None, Instant::now());
        }
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let rate = mib(p.done) / s.3.elapsed().as_secs_f64().max(1e-3);
        let percent = p.total.filter(|&t| t > 0).map(|t| p.done * 100 / t);
        if terminal {
            if s.2.is_some_and(|at| at.elapsed().as_millis() < 100) && percent != Some(100) {
                return;
            }
            s.2 = Some(Instant::now());
            let total = p.total.map_or(String::new(), |t| format!(" / {:.1} MiB", mib(t)));
            let pct = percent.map_or(String::new(), |v| format!(" ({v}%)"));
            let _ = write!(std::io::stderr(), "\r{}: {:.1}{total} MiB{pct} {rate:.0} MiB/s   ", p.file, mib(p.done));
        } else if let Some(pct) = percent.filter(|&v| v / 10 > s.1 / 10 || (v == 100 && s.1 < 100)) {
            s.1 = pct;
            tracing::info!(file = %p.file, percent = pct, mib_per_s = rate.round(), "downloading");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("vram-llm-cfghub-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let repo = root.join("models--o--m");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), commit).unwrap();
        let snap = repo.join("snapshots").join(commit);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("m-Q8_0.gguf"), b"GGUF").unwrap();
        root
    }

    #[test]
    fn hf_names_the_model_by_repo_and_tag() {
        let cache = scratch("name");
        let (name, path) = hf_model("o/m:q8_0", None, Some(&cache)).unwrap();
        assert_eq!(name, "o/m:Q8_0");
        assert!(path.ends_with("m-Q8_0.gguf"));
        let (name, _) = hf_model("o/m", Some("m-Q8_0.gguf"), Some(&cache)).unwrap();
        assert_eq!(name, "o/m");
        assert_eq!(cached(Some(&cache)), vec![("o/m:Q8_0".to_string(), path)]);
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn a_model_missing_from_the_cache_is_a_clear_error() {
        let cache = scratch("missing");
        let e = hf_model("o/m:Q4_K_M", None, Some(&cache)).unwrap_err();
        assert!(e.contains("`Q4_K_M` model file of `o/m`") && e.contains("--model PATH"), "{e}");
        let e = hf_model("nope", None, Some(&cache)).unwrap_err();
        assert!(e.starts_with("--hf-repo") && e.contains("owner/name"), "{e}");
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
