//! Memory the scheduler budgets with, per pool: host RAM and each GPU.
//!
//! A model's [`Holding`] says what it keeps where while resident. On a machine
//! without GPUs that is one figure of host memory. With GPUs, the model's
//! placement (`gpu::plan`) decides it: MiB on each GPU it occupies, and the
//! part left in host memory. Whether a model fits next to the residents is
//! asked per GPU ([`place`]), so two models on different GPUs stay loaded
//! together. Pure functions: `state.rs` calls them, tests drive them.

use serde::Serialize;

use crate::gpu::{free_after, plan, GpuInfo, ModelFootprint, Placement, PlacementError, PlacementKind, PlacementOptions, MIB};

/// What a resident model keeps in each memory pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Holding {
    /// Bytes of host memory.
    pub host_bytes: u64,
    /// `(CUDA index, MiB)` per GPU it occupies.
    #[serde(serialize_with = "per_gpu")]
    pub gpu_mib: Vec<(u32, u64)>,
}

/// `[{"index": 0, "mib": 15000}, ...]` in JSON.
fn per_gpu<S: serde::Serializer>(list: &[(u32, u64)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(|(index, mib)| serde_json::json!({"index": index, "mib": mib})))
}

impl Holding {
    /// What a placement plan will hold: its per-device figures and the part
    /// left in host memory.
    pub fn of_placement(p: &Placement) -> Self {
        Self { host_bytes: p.cpu_mib * MIB, gpu_mib: p.mib_per_device.iter().map(|d| (d.index, d.mib)).collect() }
    }
}

/// What placing a model needs: its per-layer footprint (from the GGUF) and
/// its placement options (server flags with the model's overrides).
#[derive(Debug, Clone, PartialEq)]
pub struct GpuDemand {
    pub footprint: ModelFootprint,
    pub options: PlacementOptions,
}

/// GPU memory our models may use, as if none of them were loaded: the live
/// snapshot, plus what our resident models hold when the snapshot already
/// counts them (NVML does; a static GPU list describes the machine before we
/// load anything, so it does not).
pub fn baseline<'a>(live: &[GpuInfo], ours: impl IntoIterator<Item = &'a Holding>, live_counts_ours: bool) -> Vec<GpuInfo> {
    if !live_counts_ours {
        return live.to_vec();
    }
    let mut out = live.to_vec();
    for held in ours {
        for (index, mib) in &held.gpu_mib {
            if let Some(g) = out.iter_mut().find(|g| g.index == *index) {
                g.free_mib = g.free_mib.saturating_add(*mib).min(g.total_mib.max(g.free_mib));
                g.used_mib = g.used_mib.saturating_sub(*mib);
            }
        }
    }
    out
}

/// Where a model goes on GPUs free of our models: the yardstick for
/// [`place`]. `Err` when its options name GPUs that do not exist.
pub fn ideal(baseline: &[GpuInfo], demand: &GpuDemand) -> Result<Placement, PlacementError> {
    plan(baseline, &demand.footprint, &demand.options)
}

/// Where a model goes with `others` resident: `Some(plan)` when it gets as
/// many offloaded layers as in its `ideal` placement and every device it
/// uses has room for its share (the reserve kept); `None` when it does not
/// fit that well next to them. A model whose ideal placement does not fit
/// (a forced `n_gpu_layers`, say) fits only alone.
pub fn place(baseline: &[GpuInfo], others: &[&Holding], demand: &GpuDemand, ideal: &Placement) -> Option<Placement> {
    let held: Vec<(u32, u64)> = others.iter().flat_map(|h| h.gpu_mib.iter().copied()).collect();
    if !within(ideal, baseline, demand.options.reserve_mib) {
        // Alone on its own GPUs: models on other GPUs are not in the way.
        let in_the_way = held.iter().any(|(i, mib)| *mib > 0 && ideal.devices.contains(i));
        return (!in_the_way).then(|| ideal.clone());
    }
    if held.is_empty() {
        return Some(ideal.clone());
    }
    let free = free_after(baseline, &held);
    let now = plan(&free, &demand.footprint, &demand.options).ok()?;
    (now.n_gpu_layers >= ideal.n_gpu_layers && within(&now, &free, demand.options.reserve_mib)).then_some(now)
}

/// Every device of `p` has room for its share on `gpus`, reserve kept.
fn within(p: &Placement, gpus: &[GpuInfo], reserve_mib: u64) -> bool {
    if p.kind == PlacementKind::CpuOnly {
        return true;
    }
    p.mib_per_device.iter().all(|d| {
        gpus.iter()
            .find(|g| g.index == d.index)
            .is_some_and(|g| d.mib <= g.free_mib.saturating_sub(reserve_mib))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, free_mib: u64) -> GpuInfo {
        GpuInfo { index, uuid: None, name: format!("GPU {index}"), total_mib: 24_576, free_mib, used_mib: 24_576 - free_mib, utilization: None }
    }

    /// `layers` layers of `layer_mib` each, no KV, no head, no compute margin.
    fn demand(layers: usize, layer_mib: u64) -> GpuDemand {
        GpuDemand {
            footprint: ModelFootprint {
                layer_bytes: vec![layer_mib * MIB; layers],
                output_bytes: 0, input_bytes: 0,
                kv_bytes_per_layer: vec![0; layers],
                compute_bytes: 0,
            },
            options: PlacementOptions { reserve_mib: 1024, ..PlacementOptions::default() },
        }
    }

    /// `place` with the ideal computed first, as the scheduler does.
    fn fits(gpus: &[GpuInfo], others: &[&Holding], d: &GpuDemand) -> Option<Placement> {
        place(gpus, others, d, &ideal(gpus, d).expect("valid options"))
    }

    #[test]
    fn a_model_goes_to_the_gpu_the_residents_left_free() {
        let gpus = [gpu(0, 20_000), gpu(1, 20_000)];
        let a = fits(&gpus, &[], &demand(10, 1500)).expect("fits alone");
        assert_eq!(a.devices, vec![0]);
        let held = Holding::of_placement(&a);
        assert_eq!(held.gpu_mib, vec![(0, 15_000)]);
        let b = fits(&gpus, &[&held], &demand(10, 1500)).expect("fits on GPU 1");
        assert_eq!(b.devices, vec![1]);
        let c = fits(&gpus, &[&held, &Holding::of_placement(&b)], &demand(10, 1500));
        assert_eq!(c, None, "a third copy would only partly offload");
    }

    #[test]
    fn a_split_model_fits_when_its_shares_fit_next_to_the_residents() {
        let gpus = [gpu(0, 20_000), gpu(1, 20_000)];
        let big = demand(20, 1500); // 30 000 MiB: split over both GPUs
        let alone = fits(&gpus, &[], &big).expect("fits split");
        assert_eq!(alone.devices.len(), 2);
        let small = Holding { host_bytes: 0, gpu_mib: vec![(1, 2_000)] };
        assert!(fits(&gpus, &[&small], &big).is_some(), "2 GB on GPU 1 still leaves room for a split");
        let large = Holding { host_bytes: 0, gpu_mib: vec![(1, 10_000)] };
        assert_eq!(fits(&gpus, &[&large], &big), None);
    }

    #[test]
    fn a_model_that_never_fits_fully_fits_only_alone() {
        let gpus = [gpu(0, 8_000)];
        let huge = demand(10, 1500); // 15 000 MiB on one GPU with 6 976 MiB usable
        let alone = fits(&gpus, &[], &huge).expect("partial offload alone");
        assert_eq!(alone.kind, PlacementKind::PartialOffload);
        let small = Holding { host_bytes: 0, gpu_mib: vec![(0, 100)] };
        assert!(fits(&gpus, &[&small], &huge).is_some(), "4 of 10 layers either way");
        let tiny = Holding { host_bytes: 0, gpu_mib: vec![(0, 1000)] };
        assert_eq!(fits(&gpus, &[&tiny], &huge), None, "3 layers next to a resident: not as good as alone");
        let mut forced = demand(10, 1500);
        forced.options.n_gpu_layers_override = Some(11);
        assert!(fits(&gpus, &[], &forced).is_some(), "a forced count that may not fit still runs alone");
        assert_eq!(fits(&gpus, &[&tiny], &forced), None);
        let elsewhere = Holding { host_bytes: 0, gpu_mib: vec![(1, 5_000)] };
        assert!(fits(&[gpu(0, 8_000), gpu(1, 20_000)], &[&elsewhere], &{
            let mut pinned = forced.clone();
            pinned.options.devices = Some(vec![0]);
            pinned
        })
        .is_some(), "alone on its own GPU: a model on another GPU is not in the way");
    }

    #[test]
    fn baseline_adds_back_what_a_live_snapshot_counts_as_ours() {
        let live = [gpu(0, 5_000), gpu(1, 20_000)];
        let ours = Holding { host_bytes: 0, gpu_mib: vec![(0, 15_000)] };
        assert_eq!(baseline(&live, [&ours], true)[0].free_mib, 20_000);
        assert_eq!(baseline(&live, [&ours], false)[0].free_mib, 5_000);
        assert_eq!(baseline(&live, [&ours], true)[1].free_mib, 20_000);
    }

    #[test]
    fn options_naming_a_missing_gpu_are_an_error() {
        let mut d = demand(2, 10);
        d.options.devices = Some(vec![3]);
        assert!(ideal(&[gpu(0, 20_000)], &d).is_err());
    }
}
