//! `vram-llm gpus` and `vram-llm plan` as a user runs them: the binary, the
//! test model's GGUF header and the simulated machines in tests/fixtures/gpus.

mod common;

use std::process::{Command, Output};

use serde_json::Value;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vram-llm")).args(args).output().expect("run vram-llm")
}

fn json_of(out: &Output) -> Value {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/gpus/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn plan_on_a_simulated_machine_prints_the_placement_as_json() {
    let model = common::test_model();
    let out = run(&["plan", "--model", model.to_str().unwrap(), "--gpus-from", &fixture("two_equal_24gb.json"), "--json"]);
    let p = json_of(&out);
    assert_eq!(p["kind"], "single_gpu", "{p}");
    assert_eq!(p["devices"], serde_json::json!([0]));
    assert_eq!(p["tensor_split"], serde_json::json!([1.0]));
    assert_eq!(p["n_layers"], 18, "Gemma 3 270M has 18 blocks");
    assert_eq!(p["n_gpu_layers"], 19, "every block and the output head");
    assert!(p["mib_per_device"][0]["mib"].as_u64().unwrap() > 200);
}

#[test]
fn gpus_reads_a_static_inventory() {
    let list = json_of(&run(&["gpus", "--gpus-from", &fixture("two_equal_24gb.json"), "--json"]));
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    assert_eq!(list[1]["index"], 1);
}

#[test]
fn use_fit_params_asks_llama_cpp_and_keeps_the_whole_context() {
    // On this CPU build llama.cpp sees no GPU: its fitter leaves the layer
    // count at its default (-1) and must not shrink the context.
    let model = common::test_model();
    let out = run(&["plan", "--model", model.to_str().unwrap(), "--ctx-size", "512", "--parallel", "2", "--use-fit-params", "--json"]);
    let p = json_of(&out);
    assert_eq!(p["llama_fit"]["n_ctx"], 512, "{p}");
    assert!(p["llama_fit"]["n_gpu_layers"].is_i64());
}

#[test]
fn use_fit_params_with_a_simulated_machine_is_refused() {
    let model = common::test_model();
    let out = run(&["plan", "--model", model.to_str().unwrap(), "--gpus-from", &fixture("one_24gb.json"), "--use-fit-params"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--gpus-from"), "{err}");
}

#[test]
fn serve_refuses_placement_keys_naming_a_missing_gpu() {
    let dir = std::env::temp_dir().join(format!("vram-llm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bad-devices.toml");
    let model = common::test_model();
    std::fs::write(&config, format!("[[models]]\nname = \"x\"\npath = {:?}\ndevices = [5]\n", model.display().to_string())).unwrap();
    let out = run(&["serve", "--config", config.to_str().unwrap(), "--gpus-from", &fixture("one_24gb.json"), "--port", "0"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "serve started with a missing GPU in `devices`");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model `x`") && err.contains("GPU 5"), "{err}");
}

#[test]
fn version_names_the_llama_cpp_devices_found_at_run_time() {
    let out = run(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("vram-llm "), "{text}");
    let backends = text.lines().find_map(|l| l.strip_prefix("backends: ")).unwrap_or_else(|| panic!("{text}"));
    // A CPU machine has at least llama.cpp's CPU device.
    assert!(backends.contains("CPU ("), "{text}");
}

/// A Hugging Face cache as llama.cpp and huggingface_hub lay it out, with
/// the test model linked in under two repositories.
fn fake_hf_cache(tag: &str) -> std::path::PathBuf {
    let root = std::env::temp_dir().join(format!("vram-llm-hfcache-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let commit = "0123456789abcdef0123456789abcdef01234567";
    for (folder, file) in [("models--ggml-org--tinygemma3-GGUF", "tinygemma3-Q8_0.gguf"), ("models--o--gemma", "gemma-Q4_K_M.gguf")] {
        let snap = root.join(folder).join("snapshots").join(commit);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(root.join(folder).join("refs")).unwrap();
        std::fs::write(root.join(folder).join("refs/main"), commit).unwrap();
        std::os::unix::fs::symlink(common::test_model(), snap.join(file)).unwrap();
    }
    root
}

fn models_with_cache(cache: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vram-llm"))
        .arg("models")
        .args(args)
        .env("LLAMA_CACHE", cache)
        .output()
        .expect("run vram-llm")
}

#[test]
fn with_no_model_named_the_hugging_face_cache_is_served() {
    let cache = fake_hf_cache("router");
    let list = json_of(&models_with_cache(&cache, &["--json"]));
    let names: Vec<&str> = list["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ggml-org/tinygemma3-GGUF:Q8_0", "o/gemma:Q4_K_M"]);
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn hf_repo_picks_a_cached_file_and_names_a_missing_one() {
    let cache = fake_hf_cache("hf");
    let list = json_of(&models_with_cache(&cache, &["-hf", "o/gemma", "--json"]));
    assert_eq!(list["models"][0]["name"], "o/gemma", "{list}");
    assert!(list["models"][0]["path"].as_str().unwrap().ends_with("gemma-Q4_K_M.gguf"));
    let out = models_with_cache(&cache, &["-hf", "o/gemma:Q2_K"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`Q2_K` model file of `o/gemma`") && err.contains(&*cache.to_string_lossy()), "{err}");
    std::fs::remove_dir_all(&cache).unwrap();
}
