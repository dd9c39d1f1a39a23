//! Embeds build information shown by `vram-llm --version` and `GET /props`:
//! crate version, git commit (when built from a checkout), the llama.cpp
//! binding versions (from Cargo.lock) and the enabled cargo features. With
//! `dynamic-link`, the binary's own folder is on its library search path.
//! With `cuda`, the GPU sleep shim is built beside the binary.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=.git/HEAD");
    // A commit moves the branch HEAD names, not HEAD itself.
    if let Some(branch) = std::fs::read_to_string(".git/HEAD").ok().and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string())) {
        println!("cargo:rerun-if-changed=.git/{branch}");
    }

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

    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        build_sleep_shim();
    }
}

/// GPU builds: the sleep shim (src/shim, issue 23) beside the binary, where
/// it is looked for at run time. Built with the C compiler against the CUDA
/// toolkit's headers (`CUDA_PATH`, as llama-cpp-sys-2 finds the toolkit) by
/// scripts/gpu/build_shim.sh, the same script the GPU kit uses. A failure is
/// a warning, not an error: the server then unloads GPU models instead of
/// letting them sleep, and says so in its log.
fn build_sleep_shim() {
    for f in ["src/shim/vram_sleep.c", "src/shim/vram_sleep_ggml.c", "src/shim/vram_sleep.h", "src/shim/vs_internal.h", "scripts/gpu/build_shim.sh"] {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-env-changed=CUDA_PATH");
    // OUT_DIR is target/<profile>/build/vram-llm-<hash>/out: the binary's folder is three levels up.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let Some(bin_dir) = out.ancestors().nth(3) else { return };
    let mut cmd = Command::new("bash");
    cmd.arg("scripts/gpu/build_shim.sh").arg(bin_dir);
    if let Some(cuda) = std::env::var_os("CUDA_PATH") {
        cmd.arg(std::path::Path::new(&cuda).join("include"));
    }
    match cmd.output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => println!(
            "cargo:warning=the GPU sleep shim was not built (GPU models will unload instead of sleeping): {}",
            String::from_utf8_lossy(&o.stderr).trim().replace('\n', " | ")
        ),
        Err(e) => println!("cargo:warning=the GPU sleep shim was not built: cannot run bash: {e}"),
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
