//! Embeds build information shown by `vram-llm --version` and `GET /props`:
//! crate version, git commit (when built from a checkout), the llama.cpp
//! binding versions (from Cargo.lock) and the enabled cargo features. With
//! `dynamic-link`, the binary's own folder is on its library search path.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=.git/HEAD");

    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=VRAM_LLM_GIT_COMMIT={commit}");

    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let llama = format!(
        "llama-cpp-2 {} / llama-cpp-sys-2 {}",
        locked_version(&lock, "llama-cpp-2").unwrap_or("unknown"),
        locked_version(&lock, "llama-cpp-sys-2").unwrap_or("unknown")
    );
    println!("cargo:rustc-env=VRAM_LLM_LLAMA_BUILD={llama}");

    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(|f| f.to_lowercase().replace('_', "-")))
        .filter(|f| f != "default")
        .collect();
    features.sort();
    // Without `cuda`, llama.cpp runs on the CPU only.
    let features = if features.is_empty() { "cpu".to_string() } else { features.join(",") };
    println!("cargo:rustc-env=VRAM_LLM_FEATURES={features}");

    // With llama.cpp as shared libraries, the binary also looks for them in
    // its own folder, so `vram-llm` + `lib*.so` (+ backend modules) copied
    // together run without LD_LIBRARY_PATH (which, when set, still wins).
    if std::env::var_os("CARGO_FEATURE_DYNAMIC_LINK").is_some() {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN");
    }
}

/// The version Cargo.lock pins for `name`: the line after `name = "<name>"`.
fn locked_version<'a>(lock: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == needle {
            return lines.next()?.trim().strip_prefix("version = \"")?.strip_suffix('"');
        }
    }
    None
}
