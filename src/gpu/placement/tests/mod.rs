//! Placement on simulated machines: fixtures, invariants, single GPU,
//! splits, partial offload.

mod options;

use super::*;
use crate::gpu::inventory::{GpuInventory, StaticInventory};

fn fixture(name: &str) -> Vec<GpuInfo> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gpus")
        .join(name);
    let inv = StaticInventory::from_json_file(&path).unwrap_or_else(|e| panic!("{e}"));
    inv.gpus().unwrap_or_else(|e| panic!("{e}"))
}

fn footprint(
    layers: usize,
    layer_mib: u64,
    kv_mib: u64,
    non_layer_mib: u64,
    compute_mib: u64,
) -> ModelFootprint {
    ModelFootprint {
        layer_bytes: vec![layer_mib * MIB; layers],
        output_bytes: non_layer_mib * MIB,
        input_bytes: 0,
        kv_bytes_per_layer: vec![kv_mib * MIB; layers],
        compute_bytes: compute_mib * MIB,
    }
}

/// "7B Q4": 32 × (120 + 16 KV) + 500 + 300 = 5152 MiB.
fn m7b() -> ModelFootprint {
    footprint(32, 120, 16, 500, 300)
}

/// "70B-ish": 80 × (480 + 20 KV) + 1000 + 500 = 41500 MiB.
fn m70b() -> ModelFootprint {
    footprint(80, 480, 20, 1000, 500)
}

/// 32 × (480 + 20 KV) + 500 + 500 = 17000 MiB: too big for 2 × 8 GB.
fn m32x500() -> ModelFootprint {
    footprint(32, 480, 20, 500, 500)
}

fn opts() -> PlacementOptions {
    PlacementOptions::default()
}

fn uses(p: &Placement) -> Vec<(u32, u64, u32)> {
    p.mib_per_device
        .iter()
        .map(|d| (d.index, d.mib, d.layers))
        .collect()
}

fn ok(gpus: &[GpuInfo], model: &ModelFootprint, o: &PlacementOptions) -> Placement {
    let p = plan(gpus, model, o).unwrap_or_else(|e| panic!("{e}"));
    check_invariants(gpus, model, o, &p);
    p
}

fn check_invariants(
    gpus: &[GpuInfo],
    model: &ModelFootprint,
    o: &PlacementOptions,
    p: &Placement,
) {
    assert_eq!(p.tensor_split.len(), p.devices.len());
    assert_eq!(p.mib_per_device.len(), p.devices.len());
    if !p.devices.is_empty() {
        let sum: f64 = p.tensor_split.iter().map(|v| f64::from(*v)).sum();
        assert!(
            (sum - 1.0).abs() < 1e-6,
            "tensor_split {:?} sums to {sum}",
            p.tensor_split
        );
        assert_eq!(p.main_gpu, Some(p.devices[0]));
    }
    assert_eq!(
        p.gpu_mib() + p.cpu_mib,
        mib_up(model.total_bytes()),
        "{p:?}"
    );
    assert_eq!(p.n_layers, model.n_layers());
    assert!(p.n_gpu_layers <= p.n_layers + 1);
    let placed: u32 = p.mib_per_device.iter().map(|d| d.layers).sum();
    assert_eq!(placed, p.n_gpu_layers.saturating_sub(1));
    match p.kind {
        PlacementKind::CpuOnly => assert!(p.devices.is_empty() && p.n_gpu_layers == 0),
        PlacementKind::SingleGpu => {
            assert!(p.devices.len() == 1 && p.n_gpu_layers == p.n_layers + 1)
        }
        PlacementKind::Split => {
            assert!(p.devices.len() > 1 && p.n_gpu_layers == p.n_layers + 1)
        }
        PlacementKind::PartialOffload => assert!(p.n_gpu_layers <= p.n_layers),
    }
    if p.devices.len() <= 1 {
        assert_eq!(p.split_mode, SplitMode::None);
    }
    if o.n_gpu_layers_override.is_none() {
        for d in &p.mib_per_device {
            let g = gpus
                .iter()
                .find(|g| g.index == d.index)
                .expect("device exists");
            assert!(
                d.mib <= g.free_mib.saturating_sub(o.reserve_mib),
                "{d:?} over budget in {p:?}"
            );
        }
    }
}

// ---- the simulated machines, 7B footprint ----

#[test]
fn one_gpu_single() {
    let p = ok(&fixture("one_24gb.json"), &m7b(), &opts());
    assert_eq!(p.kind, PlacementKind::SingleGpu);
    assert_eq!(
        (p.devices.clone(), p.main_gpu, p.split_mode),
        (vec![0], Some(0), SplitMode::None)
    );
    assert_eq!(p.tensor_split, vec![1.0]);
    assert_eq!((p.n_gpu_layers, p.n_layers), (33, 32));
    assert_eq!(uses(&p), vec![(0, 5152, 32)]);
    assert_eq!(p.cpu_mib, 0);
    assert_eq!(
        p.reason,
        "fits on GPU 0: needs 5152 MiB of 22976 MiB usable"
    );
}

#[test]
fn two_equal_gpus_pick_lowest_index_on_tie() {
    let p = ok(&fixture("two_equal_24gb.json"), &m7b(), &opts());
    assert_eq!(
        (p.kind, p.devices.clone()),
        (PlacementKind::SingleGpu, vec![0])
    );
}

#[test]
fn display_gpu_free_desc_vs_index() {
    let gpus = fixture("two_24gb_plus_display.json");
    let p = ok(&gpus, &m7b(), &opts());
    assert_eq!(
        (p.kind, p.devices.clone()),
        (PlacementKind::SingleGpu, vec![2])
    );
    let by_index = PlacementOptions {
        device_order: DeviceOrder::Index,
        ..opts()
    };
    let p = ok(&gpus, &m7b(), &by_index);
    // GPU 0 has 1536 − 1024 = 512 MiB usable: too small, so the first that fits is GPU 1.
    assert_eq!(
        (p.kind, p.devices.clone()),
        (PlacementKind::SingleGpu, vec![1])
    );
}

#[test]
fn reserve_larger_than_free_means_cpu() {
    let p = ok(&fixture("reserve_exceeds_free.json"), &m7b(), &opts());
    assert_eq!(p.kind, PlacementKind::CpuOnly);
    assert_eq!((p.n_gpu_layers, p.cpu_mib, p.main_gpu), (0, 5152, None));
    assert_eq!(
        p.reason,
        "no selected GPU has memory left after the 1024 MiB reserve: CPU only"
    );
    let small_reserve = PlacementOptions {
        reserve_mib: 0,
        ..opts()
    };
    assert_eq!(
        ok(
            &fixture("reserve_exceeds_free.json"),
            &m7b(),
            &small_reserve
        )
        .kind,
        PlacementKind::PartialOffload
    );
}

#[test]
fn no_gpu_means_cpu() {
    let p = ok(&fixture("no_gpu.json"), &m7b(), &opts());
    assert_eq!(p.kind, PlacementKind::CpuOnly);
    assert_eq!(
        (p.devices.len(), p.tensor_split.len(), p.cpu_mib),
        (0, 0, 5152)
    );
    assert_eq!(p.reason, "no GPU selected: CPU only");
}

#[test]
fn devices_subset() {
    let gpus = fixture("two_24gb_plus_display.json");
    let o = PlacementOptions {
        devices: Some(vec![1, 0]),
        ..opts()
    };
    assert_eq!(ok(&gpus, &m7b(), &o).devices, vec![1]);
    // Only the display GPU: 512 MiB usable cannot hold head (500) + compute (300).
    let o = PlacementOptions {
        devices: Some(vec![0]),
        ..opts()
    };
    let p = ok(&gpus, &m7b(), &o);
    assert_eq!(p.kind, PlacementKind::CpuOnly);
    let o = PlacementOptions {
        devices: Some(vec![]),
        ..opts()
    };
    assert_eq!(ok(&gpus, &m7b(), &o).kind, PlacementKind::CpuOnly);
}

#[test]
fn devices_errors() {
    let gpus = fixture("two_24gb_plus_display.json");
    let o = PlacementOptions {
        devices: Some(vec![0, 5]),
        ..opts()
    };
    let e = plan(&gpus, &m7b(), &o).expect_err("GPU 5");
    assert_eq!(
        e,
        PlacementError::UnknownDevice {
            index: 5,
            available: vec![0, 1, 2]
        }
    );
    assert_eq!(
        e.to_string(),
        "`devices` names GPU 5, which does not exist (GPUs: [0, 1, 2])"
    );
    let o = PlacementOptions {
        devices: Some(vec![1, 1]),
        ..opts()
    };
    assert_eq!(
        plan(&gpus, &m7b(), &o),
        Err(PlacementError::DuplicateDevice { index: 1 })
    );
    let o = PlacementOptions {
        devices: Some(vec![0]),
        ..opts()
    };
    assert!(plan(&fixture("no_gpu.json"), &m7b(), &o).is_err());
}

// ---- split and partial offload ----

#[test]
fn split_over_two_equal_gpus() {
    let p = ok(&fixture("two_equal_24gb.json"), &m70b(), &opts());
    assert_eq!(p.kind, PlacementKind::Split);
    assert_eq!(
        (p.devices.clone(), p.split_mode, p.n_gpu_layers),
        (vec![0, 1], SplitMode::Layer, 81)
    );
    assert_eq!(p.tensor_split, vec![0.5, 0.5]);
    // GPU 0: layers 0..=40 (41 × 500) + compute 500; GPU 1: layers 41..=79 (39 × 500) + head 1000.
    assert_eq!(uses(&p), vec![(0, 21000, 41), (1, 20500, 39)]);
    assert_eq!(p.cpu_mib, 0);
}

#[test]
fn split_drops_display_gpu_too_small_for_a_layer() {
    let p = ok(&fixture("two_24gb_plus_display.json"), &m70b(), &opts());
    assert_eq!(
        (p.kind, p.devices.clone()),
        (PlacementKind::Split, vec![2, 1])
    );
    // Shares 22976 : 20976 usable.
    assert!(
        (p.tensor_split[0] - 22976.0 / 43952.0).abs() < 1e-6,
        "{:?}",
        p.tensor_split
    );
    assert_eq!(uses(&p), vec![(2, 22000, 43), (1, 19500, 37)]);
}

#[test]
fn row_split_is_passed_through() {
    let o = PlacementOptions {
        split_mode: SplitMode::Row,
        ..opts()
    };
    let p = ok(&fixture("two_equal_24gb.json"), &m70b(), &o);
    assert_eq!(
        (p.kind, p.split_mode),
        (PlacementKind::Split, SplitMode::Row)
    );
}

#[test]
fn partial_offload_on_one_gpu() {
    // 500 compute + 1000 head + 500 × (k − 1) ≤ 22976  →  k = 43.
    let p = ok(&fixture("one_24gb.json"), &m70b(), &opts());
    assert_eq!(p.kind, PlacementKind::PartialOffload);
    assert_eq!(
        (p.n_gpu_layers, p.split_mode, p.main_gpu),
        (43, SplitMode::None, Some(0))
    );
    assert_eq!(uses(&p), vec![(0, 22500, 42)]);
    assert_eq!(p.cpu_mib, 19000);
}

#[test]
fn partial_offload_over_all_gpus() {
    // 2 × 6976 MiB usable for 17000 MiB. Items of 500 MiB split 50:50, compute on GPU 0:
    // GPU 0 takes ceil(k/2) items + 500 ≤ 6976 → k = 24 (12 + 12 items, head on GPU 1).
    let p = ok(&fixture("two_small_8gb.json"), &m32x500(), &opts());
    assert_eq!(p.kind, PlacementKind::PartialOffload);
    assert_eq!(
        (p.n_gpu_layers, p.devices.clone(), p.split_mode),
        (24, vec![0, 1], SplitMode::Layer)
    );
    assert_eq!(uses(&p), vec![(0, 6500, 12), (1, 6000, 11)]);
    assert_eq!(p.cpu_mib, 9 * 500);
    assert_eq!(
        p.reason,
        "needs 17000 MiB but the selected GPUs have 13952 MiB usable together: 23 of 32 layers offloaded to GPUs 0, 1"
    );
}

#[test]
fn split_mode_none_keeps_a_too_big_model_on_the_main_gpu() {
    // 500 compute + 500 head + 500 × (k − 1) ≤ 6976 → k = 12.
    let o = PlacementOptions {
        split_mode: SplitMode::None,
        ..opts()
    };
    let p = ok(&fixture("two_small_8gb.json"), &m32x500(), &o);
    assert_eq!(p.kind, PlacementKind::PartialOffload);
    assert_eq!(
        (p.devices.clone(), p.n_gpu_layers, p.split_mode),
        (vec![0], 12, SplitMode::None)
    );
    assert_eq!(uses(&p), vec![(0, 6500, 11)]);
    let o = PlacementOptions {
        split_mode: SplitMode::None,
        main_gpu: Some(1),
        spread: true,
        ..opts()
    };
    assert_eq!(
        ok(&fixture("two_small_8gb.json"), &m32x500(), &o).devices,
        vec![1]
    );
}

#[test]
fn nothing_fits_is_cpu_only() {
    let gpus = vec![GpuInfo {
        index: 0,
        uuid: None,
        name: "tiny".into(),
        total_mib: 2048,
        free_mib: 1500,
        used_mib: 548,
        utilization: None,
    }];
    let p = ok(&gpus, &m70b(), &opts());
    assert_eq!(p.kind, PlacementKind::CpuOnly);
    assert_eq!(p.cpu_mib, 41500);
}

// ---- token embeddings stay in host memory (measured on an H200, docs/gpu.md) ----

#[test]
fn token_embeddings_are_charged_to_the_host_not_the_gpu() {
    let mut m = m7b();
    m.input_bytes = 400 * MIB;
    // 5152 MiB go to the GPU as before; the embeddings do not count against it.
    let p = ok(&fixture("one_24gb.json"), &m, &opts());
    assert_eq!(p.kind, PlacementKind::SingleGpu);
    assert_eq!(uses(&p), vec![(0, 5152, 32)]);
    assert_eq!(p.cpu_mib, 400);
    assert_eq!(p.reason, "fits on GPU 0: needs 5152 MiB of 22976 MiB usable");
    // A GPU with exactly the GPU part usable still takes the whole model.
    let o = PlacementOptions { reserve_mib: 24000 - 5152, ..opts() };
    let p = ok(&fixture("one_24gb.json"), &m, &o);
    assert_eq!((p.kind, p.n_gpu_layers), (PlacementKind::SingleGpu, 33));
    // Partial offload: the host keeps the embeddings and the layers left behind.
    let o = PlacementOptions { reserve_mib: 24000 - 3000, ..opts() };
    let p = ok(&fixture("one_24gb.json"), &m, &o);
    assert_eq!(p.kind, PlacementKind::PartialOffload);
    let left = u64::from(p.n_layers - (p.n_gpu_layers - 1)) * 136;
    assert_eq!(p.cpu_mib, 400 + left);
    // CPU only: everything in host memory.
    let p = ok(&fixture("no_gpu.json"), &m, &opts());
    assert_eq!(p.cpu_mib, 5152 + 400);
}
