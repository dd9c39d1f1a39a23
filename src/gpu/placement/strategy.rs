//! The placement strategies: automatic, forced `n_gpu_layers`, a given
//! `tensor_split`, CPU only; and building a [`Placement`] from a layout.

use super::*;

/// The rules of the issue when no override is given.
pub(super) fn automatic(costs: &Costs, ordered: &[Candidate], opts: &PlacementOptions) -> Placement {
    let usable: Vec<Candidate> = ordered.iter().copied().filter(|c| c.usable > 0).collect();
    let Some(first) = usable.first().copied() else {
        return cpu_only(costs, no_gpu_reason(ordered, opts));
    };
    let total = costs.gpu_total();
    let forced_main = opts.main_gpu.is_some_and(|m| m == first.index);
    let spread = opts.spread && opts.split_mode != SplitMode::None && usable.len() > 1;
    if !spread {
        let pool = if forced_main {
            &usable[..1]
        } else {
            &usable[..]
        };
        if let Some(c) = pool.iter().find(|c| total <= c.usable) {
            let reason = format!(
                "fits on GPU {}: needs {} MiB of {} MiB usable",
                c.index,
                mib_up(total),
                c.usable / MIB
            );
            return build(costs, &[*c], &[1.0], costs.all(), opts.split_mode, reason);
        }
    }
    if opts.split_mode == SplitMode::None || usable.len() == 1 {
        let k = max_layers(costs, &[first], &[1.0]);
        let why = if opts.split_mode == SplitMode::None {
            "split mode none"
        } else {
            "only one usable GPU"
        };
        let reason = format!(
            "needs {} MiB but GPU {} has {} MiB usable ({why}): {} of {} layers offloaded",
            mib_up(total),
            first.index,
            first.usable / MIB,
            k.saturating_sub(1),
            costs.n_layers
        );
        return build(costs, &[first], &[1.0], k, opts.split_mode, reason);
    }
    let weights = proportional(&usable);
    let sum_usable: u64 = usable.iter().map(|c| c.usable / MIB).sum();
    if layout(costs, costs.all(), &weights).fits(&usable) {
        let (cands, weights) = prune(costs, costs.all(), usable.clone(), weights);
        let ids = list(&cands);
        let together: u64 = cands.iter().map(|c| c.usable / MIB).sum();
        let why = if spread {
            "spread requested".to_string()
        } else {
            format!(
                "no single GPU has enough (largest {} MiB usable)",
                first.usable / MIB
            )
        };
        let reason = format!(
            "needs {} MiB, {why}: split over GPUs {ids} by usable memory ({together} MiB together)",
            mib_up(total)
        );
        return build(
            costs,
            &cands,
            &weights,
            costs.all(),
            opts.split_mode,
            reason,
        );
    }
    let k = max_layers(costs, &usable, &weights);
    let (cands, weights) = prune(costs, k, usable.clone(), weights);
    let ids = list(&cands);
    let reason = format!(
        "needs {} MiB but the selected GPUs have {sum_usable} MiB usable together: {} of {} layers offloaded to GPUs {ids}",
        mib_up(total),
        k.saturating_sub(1),
        costs.n_layers
    );
    build(costs, &cands, &weights, k, opts.split_mode, reason)
}

/// Per-model `n_gpu_layers`: device choice as usual, layer count as given even if it may not fit.
pub(super) fn with_forced_layers(
    costs: &Costs,
    ordered: &[Candidate],
    opts: &PlacementOptions,
    k: u32,
) -> Placement {
    let k = k.min(costs.all());
    let usable: Vec<Candidate> = ordered.iter().copied().filter(|c| c.usable > 0).collect();
    if k == 0 {
        return cpu_only(costs, "n_gpu_layers override is 0: CPU only".to_string());
    }
    let Some(first) = usable.first().copied() else {
        return cpu_only(
            costs,
            format!(
                "n_gpu_layers override ignored: {}",
                no_gpu_reason(ordered, opts)
            ),
        );
    };
    let need = layout(costs, k, &[1.0]).bytes[0];
    let spread = opts.spread && opts.split_mode != SplitMode::None && usable.len() > 1;
    let forced_main = opts.main_gpu.is_some_and(|m| m == first.index);
    let pool = if forced_main {
        &usable[..1]
    } else {
        &usable[..]
    };
    let single = pool.iter().find(|c| need <= c.usable).copied();
    let (cands, weights) = match single {
        Some(c) if !spread => (vec![c], vec![1.0]),
        _ if opts.split_mode == SplitMode::None || usable.len() == 1 => (vec![first], vec![1.0]),
        _ => (usable.clone(), proportional(&usable)),
    };
    let fits = layout(costs, k, &weights).fits(&cands);
    let reason = format!(
        "n_gpu_layers override {k} on GPUs {} ({})",
        list(&cands),
        if fits {
            "fits"
        } else {
            "may not fit: exceeds usable memory"
        }
    );
    build(costs, &cands, &weights, k, opts.split_mode, reason)
}

/// Per-model `tensor_split`: devices and shares as given; layers as many as fit unless forced.
pub(super) fn with_tensor_split(
    costs: &Costs,
    selected: &[&GpuInfo],
    ordered: &[Candidate],
    shares: &[f32],
    opts: &PlacementOptions,
) -> Result<Placement, PlacementError> {
    if opts.split_mode == SplitMode::None {
        return Err(PlacementError::TensorSplitWithoutSplitMode);
    }
    if shares.len() != selected.len() {
        return Err(PlacementError::TensorSplitLength {
            expected: selected.len(),
            got: shares.len(),
        });
    }
    if let Some((position, value)) = shares
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite() || **v < 0.0)
    {
        return Err(PlacementError::TensorSplitValue {
            position,
            value: *value,
        });
    }
    let share_of = |index: u32| {
        selected
            .iter()
            .zip(shares)
            .find(|(g, _)| g.index == index)
            .map_or(0.0, |(_, s)| *s)
    };
    let cands: Vec<Candidate> = ordered
        .iter()
        .copied()
        .filter(|c| share_of(c.index) > 0.0)
        .collect();
    if cands.is_empty() {
        return Err(PlacementError::TensorSplitAllZero);
    }
    let raw: Vec<f64> = cands.iter().map(|c| f64::from(share_of(c.index))).collect();
    let weights = normalise(&raw);
    let (k, how) = match opts.n_gpu_layers_override {
        Some(k) => (k.min(costs.all()), "n_gpu_layers override"),
        None => (max_layers(costs, &cands, &weights), "as many layers as fit"),
    };
    let reason = format!(
        "tensor_split override over GPUs {} with {how}: {} of {} layers offloaded",
        list(&cands),
        k.saturating_sub(1),
        costs.n_layers
    );
    Ok(build(costs, &cands, &weights, k, opts.split_mode, reason))
}

pub(super) fn no_gpu_reason(ordered: &[Candidate], opts: &PlacementOptions) -> String {
    if ordered.is_empty() {
        "no GPU selected: CPU only".to_string()
    } else {
        format!(
            "no selected GPU has memory left after the {} MiB reserve: CPU only",
            opts.reserve_mib
        )
    }
}

/// Assemble a [`Placement`] from devices, shares and `n_gpu_layers`.
pub(super) fn build(
    costs: &Costs,
    cands: &[Candidate],
    weights: &[f32],
    k: u32,
    mode: SplitMode,
    reason: String,
) -> Placement {
    if k == 0 || cands.is_empty() {
        return cpu_only(costs, reason);
    }
    let lay = layout(costs, k, weights);
    let mut parts = lay.bytes.clone();
    parts.push(lay.cpu);
    let mut mib = round_mib(&parts);
    let cpu_mib = mib.pop().unwrap_or(0);
    let kind = if k < costs.all() {
        PlacementKind::PartialOffload
    } else if cands.len() == 1 {
        PlacementKind::SingleGpu
    } else {
        PlacementKind::Split
    };
    Placement {
        devices: cands.iter().map(|c| c.index).collect(),
        main_gpu: Some(cands[0].index),
        split_mode: if cands.len() == 1 {
            SplitMode::None
        } else {
            mode
        },
        tensor_split: weights.to_vec(),
        n_gpu_layers: k,
        n_layers: costs.n_layers,
        mib_per_device: cands
            .iter()
            .zip(mib.iter().zip(&lay.layers))
            .map(|(c, (m, l))| DeviceUse {
                index: c.index,
                mib: *m,
                layers: *l,
            })
            .collect(),
        cpu_mib,
        kind,
        reason,
        use_fit_params: false,
    }
}

pub(super) fn cpu_only(costs: &Costs, reason: String) -> Placement {
    Placement {
        devices: Vec::new(),
        main_gpu: None,
        split_mode: SplitMode::None,
        tensor_split: Vec::new(),
        n_gpu_layers: 0,
        n_layers: costs.n_layers,
        mib_per_device: Vec::new(),
        cpu_mib: mib_up(costs.total()),
        kind: PlacementKind::CpuOnly,
        reason,
        use_fit_params: false,
    }
}

/// Shares proportional to usable memory.
pub(super) fn proportional(cands: &[Candidate]) -> Vec<f32> {
    let raw: Vec<f64> = cands.iter().map(|c| c.usable as f64).collect();
    normalise(&raw)
}

/// Scale to sum 1, then fold the `f32` rounding error into the largest share so the
/// `f32` values sum to 1 within 1e-6.
pub(super) fn normalise(raw: &[f64]) -> Vec<f32> {
    let sum: f64 = raw.iter().sum();
    if raw.is_empty() || sum <= 0.0 {
        return vec![0.0; raw.len()];
    }
    let mut out: Vec<f32> = raw.iter().map(|v| (v / sum) as f32).collect();
    let err = 1.0 - out.iter().map(|v| f64::from(*v)).sum::<f64>();
    let largest = (0..out.len())
        .max_by(|a, b| out[*a].total_cmp(&out[*b]))
        .unwrap_or(0);
    out[largest] += err as f32;
    out
}

/// Bytes to MiB so that the parts add up to the rounded-up total (largest remainder).
pub(super) fn round_mib(parts: &[u64]) -> Vec<u64> {
    let total = mib_up(parts.iter().fold(0u64, |a, b| a.saturating_add(*b)));
    let mut out: Vec<u64> = parts.iter().map(|b| b / MIB).collect();
    let mut missing = total.saturating_sub(out.iter().sum());
    let mut by_remainder: Vec<usize> = (0..parts.len()).collect();
    by_remainder.sort_by_key(|i| std::cmp::Reverse(parts[*i] % MIB));
    for i in by_remainder {
        if missing == 0 || parts[i].is_multiple_of(MIB) {
            break;
        }
        out[i] += 1;
        missing -= 1;
    }
    out
}

pub(super) fn mib_up(bytes: u64) -> u64 {
    bytes.div_ceil(MIB)
}

pub(super) fn list(cands: &[Candidate]) -> String {
    cands
        .iter()
        .map(|c| c.index.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
