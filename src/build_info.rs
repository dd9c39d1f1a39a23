//! Build information embedded by build.rs.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: &'static str,
    pub git_commit: &'static str,
    pub llama_cpp: &'static str,
    pub features: &'static str,
}

pub const BUILD: BuildInfo = BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    git_commit: env!("VRAM_LLM_GIT_COMMIT"),
    llama_cpp: env!("VRAM_LLM_LLAMA_BUILD"),
    features: env!("VRAM_LLM_FEATURES"),
};

impl BuildInfo {
    /// One string, as llama-server's `build_info` (`b<number>-<commit>`
    /// there): `vram-llm-<version>-<commit>`.
    pub fn llama_server_style(&self) -> String {
        format!("vram-llm-{}-{}", self.version, self.git_commit)
    }
}

/// What `vram-llm --version` prints after the program name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("VRAM_LLM_GIT_COMMIT"),
    ")\nllama.cpp: ",
    env!("VRAM_LLM_LLAMA_BUILD"),
    "\nfeatures: ",
    env!("VRAM_LLM_FEATURES")
);

impl BuildInfo {
    /// OpenAI's `system_fingerprint`: changes whenever the build does.
    pub fn fingerprint(&self) -> String {
        format!("vram-llm-{}-{}", self.version, self.git_commit)
    }
}
