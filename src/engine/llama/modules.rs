//! ggml's backends as run-time modules (`--features dynamic-backends`):
//! which folder they load from, and which of them the process loaded.
//!
//! With `GGML_BACKEND_DL` the CPU backend (one `libggml-cpu-<level>.so` per
//! instruction-set level) and any GPU backend (`libggml-cuda.so`) are loaded at
//! start, the best CPU level for the machine first. The folder is, in order:
//! `VRAM_LLM_BACKENDS_DIR`; the executable's own folder when it holds modules
//! (a release laid out as binary + modules); the folder the build wrote them to.

use std::path::{Path, PathBuf};

/// The environment variable naming the modules' folder.
pub const DIR_VAR: &str = "VRAM_LLM_BACKENDS_DIR";

/// Where to load modules from: a folder, or the build's own default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModulesDir {
    Given(PathBuf),
    BuildDefault,
}

/// Whether `name` is a backend module: `libggml-<backend>[-<variant>].so`,
/// not the core libraries every build links (`libggml.so`, `libggml-base.so`).
pub fn is_module(name: &str) -> bool {
    let Some(stem) = name.strip_prefix("libggml-") else { return false };
    let stem = stem.split(".so").next().unwrap_or("");
    name.contains(".so") && !stem.is_empty() && stem != "base"
}

#[cfg(feature = "dynamic-backends")]
fn has_modules(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().any(|e| is_module(&e.file_name().to_string_lossy())))
        .unwrap_or(false)
}

/// The folder to load from (pure over what it is shown, for tests): the
/// variable wins and must hold modules; then the executable's folder if it
/// holds any; then the build's default.
pub fn choose(var: Option<PathBuf>, exe_dir: Option<PathBuf>, holds_modules: impl Fn(&Path) -> bool) -> Result<ModulesDir, String> {
    if let Some(dir) = var {
        return if holds_modules(&dir) {
            Ok(ModulesDir::Given(dir))
        } else {
            Err(format!("{DIR_VAR}={} holds no ggml backend module (libggml-cpu-*.so, libggml-cuda.so)", dir.display()))
        };
    }
    Ok(match exe_dir.filter(|d| holds_modules(d)) {
        Some(dir) => ModulesDir::Given(dir),
        None => ModulesDir::BuildDefault,
    })
}

/// Loads the modules once, before the backend starts.
#[cfg(feature = "dynamic-backends")]
pub(super) fn load() -> Result<(), String> {
    let var = std::env::var_os(DIR_VAR).map(PathBuf::from);
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf));
    match choose(var, exe_dir, has_modules)? {
        ModulesDir::Given(dir) => llama_cpp_2::llama_backend::load_backends_from_path(&dir),
        ModulesDir::BuildDefault => llama_cpp_2::llama_backend::load_backends(),
    }
    if llama_cpp_2::list_llama_ggml_backend_devices().is_empty() {
        return Err(format!(
            "no ggml backend module could be loaded; put libggml-cpu-*.so next to the binary or set {DIR_VAR}"
        ));
    }
    Ok(())
}

#[cfg(not(feature = "dynamic-backends"))]
pub(super) fn load() -> Result<(), String> {
    Ok(())
}

/// The backend modules this process has mapped (from `/proc/self/maps`), e.g.
/// `/opt/vram-llm/libggml-cpu-haswell.so`: which CPU level was chosen, and
/// whether a GPU module loaded. Empty for static builds.
pub fn loaded() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut found: Vec<String> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.rsplit('/').next().is_some_and(is_module))
        .map(str::to_string)
        .collect();
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_told_from_the_core_libraries() {
        for name in ["libggml-cpu-haswell.so", "libggml-cpu-x64.so", "libggml-cuda.so", "libggml-cpu.so.0"] {
            assert!(is_module(name), "{name}");
        }
        for name in ["libggml.so", "libggml-base.so", "libggml-base.so.0", "libllama.so", "libggml-.so", "libggml-cpu.a"] {
            assert!(!is_module(name), "{name}");
        }
    }

    #[test]
    fn the_variable_wins_and_must_hold_modules() {
        let all = |_: &Path| true;
        let none = |_: &Path| false;
        let var = Some(PathBuf::from("/m"));
        let exe = Some(PathBuf::from("/bin"));
        assert_eq!(choose(var.clone(), exe.clone(), all), Ok(ModulesDir::Given("/m".into())));
        assert!(choose(var, exe.clone(), none).unwrap_err().contains(DIR_VAR));
        assert_eq!(choose(None, exe.clone(), all), Ok(ModulesDir::Given("/bin".into())));
        assert_eq!(choose(None, exe, none), Ok(ModulesDir::BuildDefault));
        assert_eq!(choose(None, None, all), Ok(ModulesDir::BuildDefault));
    }
}
