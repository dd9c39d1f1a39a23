//! `vram-llm models`: every configured model with its estimated memory and
//! where it would go alone on the GPUs, nothing loaded.

use crate::catalogue::{placements_alone, registrations};
use crate::cli::ModelsArgs;
use crate::config::Config;
use crate::gpu::{Placement, PlacementKind};
use crate::scheduler::{Policy, Registration};

/// `vram-llm models`: the catalogue with estimated memory, nothing loaded.
pub fn print_models(args: &ModelsArgs) -> Result<(), String> {
    let config = Config::load(&args.sources, &args.server)?;
    let inventory = config.server.gpu_inventory()?;
    let limits = config.server.sched_limits(inventory.has_gpus() && crate::engine::llama::gpu_sleep_possible());
    let gpus = inventory.gpus().map_err(|e| e.to_string())?;
    let models = registrations(config.models, &config.server.placement);
    let placements = placements_alone(&gpus, &models);
    let rows: Vec<serde_json::Value> = models
        .iter()
        .zip(&placements)
        .map(|(Registration { spec, limits: l, .. }, placement)| {
            serde_json::json!({
                "name": spec.id,
                "aliases": spec.aliases,
                "path": spec.path.display().to_string(),
                "ctx_size": spec.ctx_size,
                "parallel": spec.parallel,
                "estimated_mib": l.bytes >> 20,
                "ttl_s": spec.ttl.map(|t| t.as_secs()),
                "preload": spec.preload,
                "exclusive": spec.exclusive,
                "placement": placement.as_ref().and_then(|p| p.as_ref().ok()),
                "placement_error": placement.as_ref().and_then(|p| p.as_ref().err()),
            })
        })
        .collect();
    if args.json {
        let out = serde_json::json!({"budget_mib": limits.budget_bytes >> 20, "models": rows});
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
        return Ok(());
    }
    println!("{:<28} {:>9} {:>6} {:>8}  {:<20} {:<24} path", "name", "est. MiB", "ctx", "parallel", "alone on GPUs", "flags");
    let mut errors = Vec::new();
    for (Registration { spec, limits: l, .. }, placement) in models.iter().zip(&placements) {
        let mut flags = Vec::new();
        if spec.preload {
            flags.push("preload".to_string());
        }
        if spec.exclusive {
            flags.push("exclusive".to_string());
        }
        if let Some(ttl) = spec.ttl {
            flags.push(format!("ttl={}s", ttl.as_secs()));
        }
        if !spec.aliases.is_empty() {
            flags.push(format!("aliases={}", spec.aliases.join(",")));
        }
        let ctx = spec.ctx_size.map_or_else(|| "auto".to_string(), |c| c.to_string());
        let alone = match placement {
            None => "-".to_string(),
            Some(Err(e)) => {
                errors.push(format!("{}: {e}", spec.id));
                "error (below)".to_string()
            }
            Some(Ok(p)) => short_placement(p),
        };
        println!(
            "{:<28} {:>9} {:>6} {:>8}  {:<20} {:<24} {}",
            spec.id,
            l.bytes >> 20,
            ctx,
            spec.parallel,
            alone,
            flags.join(" "),
            spec.path.display()
        );
    }
    for e in errors {
        println!("placement error: {e}");
    }
    println!("host memory budget: {} MiB ({} policy)", limits.budget_bytes >> 20, match limits.policy {
        Policy::CacheAware => "cache-aware",
        Policy::Fifo => "fifo",
    });
    Ok(())
}

/// `GPU 0`, `split 0,1`, `13/33 layers on 0`, `cpu`: a placement in a table cell.
fn short_placement(p: &Placement) -> String {
    let list = p.devices.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    match p.kind {
        PlacementKind::SingleGpu => format!("GPU {list}"),
        PlacementKind::Split => format!("split {list}"),
        PlacementKind::PartialOffload => format!("{}/{} layers on {list}", p.n_gpu_layers.saturating_sub(1), p.n_layers),
        PlacementKind::CpuOnly => "cpu".to_string(),
    }
}

