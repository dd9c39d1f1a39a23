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
    let out = run(&["plan", "--model", model.to_str().unwrap(), "--ctx-size", "256", "--parallel", "2", "--use-fit-params", "--json"]);
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
