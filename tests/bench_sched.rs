//! Cost of the per-GPU scheduling decisions, on a simulated machine. Not a
//! test: run it and read the numbers.
//!
//!     cargo test --release --test bench_sched -- --ignored --nocapture
//!
//! The scheduler's owner task runs `poll` on every event (request arrives,
//! finishes, load ends). While a model waits for room, every poll plans that
//! model against candidate eviction sets, so this is the hot path that GPU
//! placement adds.

use std::time::{Duration, Instant};

use vram_llm::gpu::{plan, GpuInfo, ModelFootprint, PlacementOptions, MIB};
use vram_llm::scheduler::state::{Action, SchedState};
use vram_llm::scheduler::{GpuDemand, ModelLimits, Policy, SchedLimits};

fn gpus(n: u32) -> Vec<GpuInfo> {
    (0..n)
        .map(|index| GpuInfo { index, uuid: None, name: format!("GPU {index}"), total_mib: 24_576, free_mib: 24_000, used_mib: 576, utilization: None })
        .collect()
}

fn footprint(layers: usize, layer_mib: u64) -> ModelFootprint {
    ModelFootprint {
        layer_bytes: vec![layer_mib * MIB; layers],
        output_bytes: 500 * MIB, input_bytes: 0,
        kv_bytes_per_layer: vec![16 * MIB; layers],
        compute_bytes: 300 * MIB,
    }
}

fn model(name: &str, fp: ModelFootprint) -> ModelLimits {
    let bytes = fp.total_bytes();
    ModelLimits { name: name.into(), bytes, slots: 4, exclusive: false, ttl: None, gpu: Some(GpuDemand { footprint: fp, options: PlacementOptions::default() }) }
}

fn per_call(n: u32, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n
}

#[test]
#[ignore = "benchmark: prints numbers"]
fn scheduling_decision_costs() {
    let machine = gpus(4);
    let big = footprint(80, 500); // ~41 GB: split over two or more GPUs
    let p = plan(&machine, &big, &PlacementOptions::default()).unwrap();
    let t_plan = per_call(2000, || drop(plan(&machine, &big, &PlacementOptions::default())));
    println!("plan(): 80-layer model (~41 GB) on 4 x 24 GB GPUs -> {:?} over {:?}: {t_plan:?} per call", p.kind, p.devices);

    // Eight 10 GB models (two per GPU), all busy; a 41 GB model waits past
    // max_wait, so every poll searches eviction sets among busy models.
    let t0 = Instant::now();
    let mut models: Vec<ModelLimits> = (0..8).map(|i| model(&format!("m{i}"), footprint(40, 230))).collect();
    models.push(model("big", big));
    let limits = SchedLimits {
        budget_bytes: 64 << 30,
        max_loaded: None,
        max_wait: Duration::from_secs(1),
        max_queue: 1 << 20,
        max_queue_wait: None,
        policy: Policy::CacheAware,
        retry_backoff: Duration::from_secs(2),
        sleep: Default::default(),
        autoload: true,
        any_model_name: false,
    };
    let mut s = SchedState::new(models, limits, t0);
    s.set_gpus(&machine, false);
    for i in 0..8 {
        s.enqueue(i, t0).unwrap();
        let actions = s.poll(t0);
        assert!(actions.contains(&Action::Load { model: i }), "m{i}: {actions:?}");
        s.load_done(i, Ok(None), t0);
        s.poll(t0); // admits the request: the model stays busy
    }
    let resident: Vec<Vec<u32>> = (0..8).map(|i| s.models[i].placement.as_ref().unwrap().devices.clone()).collect();
    s.enqueue(8, t0).unwrap();
    let later = t0 + Duration::from_secs(5);
    s.poll(later); // closes the blockers
    let closed = (0..8).filter(|&i| s.models[i].closed).count();
    let t_poll = per_call(2000, || drop(s.poll(later)));
    println!("poll() while 41 GB waits on 8 busy 10 GB models {resident:?}: {t_poll:?} per poll ({closed} blockers closed)");
}
