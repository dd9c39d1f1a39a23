//! `vram-llm gpus` and `vram-llm plan`: print the inventory and a placement.

use crate::cli::{GpusArgs, PlanArgs};
use crate::config::file::ServerSection;
use crate::config::placement::server_options;
use crate::gpu::{detect, plan, GpuInfo};

fn inventory(gpus_from: Option<&std::path::Path>) -> Result<Vec<GpuInfo>, String> {
    detect(gpus_from).and_then(|inv| inv.gpus()).map_err(|e| e.to_string())
}

pub fn print_gpus(args: &GpusArgs) -> Result<(), String> {
    let gpus = inventory(args.gpus_from.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&gpus).map_err(|e| e.to_string())?);
        return Ok(());
    }
    if gpus.is_empty() {
        println!("no GPU: models run on the CPU");
        return Ok(());
    }
    println!("{:>5}  {:<28} {:>10} {:>10} {:>10}  uuid", "index", "name", "total MiB", "free MiB", "used MiB");
    for g in &gpus {
        println!(
            "{:>5}  {:<28} {:>10} {:>10} {:>10}  {}",
            g.index,
            g.name,
            g.total_mib,
            g.free_mib,
            g.used_mib,
            g.uuid.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

pub fn print_plan(args: &PlanArgs) -> Result<(), String> {
    let gpus = inventory(args.gpus.gpus_from.as_deref())?;
    let parallel = args.parallel.unwrap_or(crate::config::DEFAULT_PARALLEL);
    let ctx_size = crate::engine::per_slot_ctx(args.ctx_size, parallel, args.parallel.is_some(), None);
    let footprint = crate::catalogue::estimate::footprint(&args.model, ctx_size, parallel, args.swa_full)
        .map_err(|e| format!("{}: {e}", args.model.display()))?;
    let opts = server_options(&args.gpus, &ServerSection::default());
    let placement = plan(&gpus, &footprint, &opts).map_err(|e| e.to_string())?;
    let fitted = if opts.use_fit_params {
        if args.gpus.gpus_from.is_some() {
            return Err("--use-fit-params asks llama.cpp, which sees this machine's devices, not a --gpus-from list".into());
        }
        let batch = crate::config::DEFAULT_BATCH_SIZE;
        Some(crate::engine::llama::fit_only(&args.model, ctx_size, parallel, batch, opts.reserve_mib)?)
    } else {
        None
    };
    if args.json {
        let mut out = serde_json::to_value(&placement).map_err(|e| e.to_string())?;
        if let Some(f) = &fitted {
            out["llama_fit"] = serde_json::to_value(f).map_err(|e| e.to_string())?;
        }
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
        return Ok(());
    }
    println!("model:         {}", args.model.display());
    println!("placement:     {:?}: {}", placement.kind, placement.reason);
    println!("devices:       {:?} (main GPU first)", placement.devices);
    println!("main_gpu:      {}", placement.main_gpu.map_or_else(|| "-".to_string(), |g| g.to_string()));
    println!("split_mode:    {:?}", placement.split_mode);
    println!("tensor_split:  {:?}", placement.tensor_split);
    println!("n_gpu_layers:  {} of {} layers", placement.n_gpu_layers, placement.n_layers);
    for d in &placement.mib_per_device {
        println!("  GPU {}: {} MiB, {} layers", d.index, d.mib, d.layers);
    }
    println!("cpu:           {} MiB", placement.cpu_mib);
    if let Some(f) = fitted {
        println!("llama.cpp's fitter (--use-fit-params; applied at load, the plan above is the scheduler's estimate):");
        println!("  n_gpu_layers {}, tensor_split {:?}, n_ctx {}, kept on CPU: {:?}", f.n_gpu_layers, f.tensor_split, f.n_ctx, f.cpu_overrides);
    }
    Ok(())
}
