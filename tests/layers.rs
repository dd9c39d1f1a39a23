//! The layers of src/ stay layers: every `crate::<module>` path in a file
//! names a module of a lower layer (or the file's own module). Lower layers
//! never reach up, so no import cycle can form between top-level modules.
//! See docs/ARCHITECTURE.md for the picture.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use its own layer's module only if it is itself.
const LAYERS: &[&[&str]] = &[
    &["build_info", "gguf", "gpu", "hub", "metrics", "template"],
    &["types"],
    &["tools"],
    &["engine"],
    &["scheduler"],
    &["cli"],
    &["config"],
    &["catalogue"],
    &["api"],
    &["commands", "server"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a source text names as `crate::<module>`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().last();
            rest = &rest[at + "crate::".len()..];
            // `vram_llm_crate::` or `$crate::` are not ours.
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
        // `use crate::{a, b}` groups.
        if let Some(group) = code.split("use crate::{").nth(1) {
            for part in group.split(',') {
                let name: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges = BTreeSet::new();
    let mut violations = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("component").as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            violations.push(format!("src/{}: module `{module}` is in no layer (add it to LAYERS)", rel.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for used in crate_paths(&text) {
            if used == module {
                continue;
            }
            edges.insert(format!("{module} -> {used}"));
            match layer_of(&used) {
                Some(layer) if layer < own => {}
                _ => violations.push(format!("src/{}: `{module}` uses `crate::{used}`, which is not below it", rel.display())),
            }
        }
    }
    println!("module edges (all downward):\n  {}", edges.iter().cloned().collect::<Vec<_>>().join("\n  "));
    assert!(violations.is_empty(), "layer violations:\n{}", violations.join("\n"));
}

#[test]
fn the_checker_sees_paths_and_groups() {
    let text = "use crate::engine::X;\nuse crate::{gpu, types::Y};\nlet a = crate::api::f(); // crate::server in a comment";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, vec!["api", "engine", "gpu", "types"]);
}
