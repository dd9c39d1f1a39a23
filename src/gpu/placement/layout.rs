//! Per-item costs and how offloaded layers are laid out over devices,
//! exactly as llama.cpp assigns them; pruning and the most layers that fit.

use super::*;

/// Per-item costs: `items[i]` for `i < n` is layer `i` (weights + KV), `items[n]` the head;
/// `host` is what stays in host memory whatever is offloaded (the token embeddings).
pub(super) struct Costs {
    pub(super) items: Vec<u64>,
    pub(super) host: u64,
    pub(super) compute: u64,
    pub(super) n_layers: u32,
}

impl Costs {
    pub(super) fn new(model: &ModelFootprint) -> Result<Self, PlacementError> {
        if model.kv_bytes_per_layer.len() != model.layer_bytes.len() {
            return Err(PlacementError::FootprintMismatch {
                layers: model.layer_bytes.len(),
                kv: model.kv_bytes_per_layer.len(),
            });
        }
        let mut items: Vec<u64> = model
            .layer_bytes
            .iter()
            .zip(&model.kv_bytes_per_layer)
            .map(|(w, kv)| w.saturating_add(*kv))
            .collect();
        items.push(model.output_bytes);
        Ok(Self {
            items,
            host: model.input_bytes,
            compute: model.compute_bytes,
            n_layers: model.n_layers(),
        })
    }

    /// `n_gpu_layers` that offloads everything.
    pub(super) fn all(&self) -> u32 {
        self.n_layers.saturating_add(1)
    }

    /// What a full offload puts on GPUs: everything but `host`.
    pub(super) fn gpu_total(&self) -> u64 {
        self.total().saturating_sub(self.host)
    }

    pub(super) fn total(&self) -> u64 {
        self.items
            .iter()
            .fold(self.compute.saturating_add(self.host), |a, b| a.saturating_add(*b))
    }
}

/// A selected GPU and the bytes it may take (free − reserve).
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    pub(super) index: u32,
    pub(super) usable: u64,
}

/// Bytes per device (same order as the candidates) and on the CPU.
pub(super) struct Layout {
    pub(super) bytes: Vec<u64>,
    /// Repeating layers per device.
    pub(super) layers: Vec<u32>,
    /// Offloaded items (layers and head) per device.
    pub(super) items: Vec<u32>,
    pub(super) cpu: u64,
}

impl Layout {
    pub(super) fn fits(&self, cands: &[Candidate]) -> bool {
        self.bytes.iter().zip(cands).all(|(b, c)| *b <= c.usable)
    }
}

/// Mirror of llama.cpp's assignment of the last `k` items to devices by split points.
pub(super) fn layout(costs: &Costs, k: u32, weights: &[f32]) -> Layout {
    let mut bytes = vec![0u64; weights.len()];
    let mut layers = vec![0u32; weights.len()];
    let mut items = vec![0u32; weights.len()];
    let n_items = costs.items.len();
    let k = if weights.is_empty() {
        0
    } else {
        (k as usize).min(n_items)
    };
    let start = n_items - k;
    let points = split_points(weights);
    let mut cpu = costs.items[..start]
        .iter()
        .fold(costs.host, |a, b| a.saturating_add(*b));
    for (j, cost) in costs.items[start..].iter().enumerate() {
        let p = j as f32 / k as f32;
        let dev = points
            .iter()
            .position(|s| *s > p)
            .unwrap_or(weights.len() - 1);
        bytes[dev] = bytes[dev].saturating_add(*cost);
        items[dev] += 1;
        if start + j < costs.n_layers as usize {
            layers[dev] += 1;
        }
    }
    if k > 0 {
        bytes[0] = bytes[0].saturating_add(costs.compute);
    } else {
        cpu = cpu.saturating_add(costs.compute);
    }
    Layout {
        bytes,
        layers,
        items,
        cpu,
    }
}

/// Cumulative, normalised split points, in `f32` as llama.cpp computes them.
pub(super) fn split_points(weights: &[f32]) -> Vec<f32> {
    let mut sum = 0.0f32;
    let mut points: Vec<f32> = weights
        .iter()
        .map(|w| {
            sum += w;
            sum
        })
        .collect();
    if sum > 0.0 {
        points.iter_mut().for_each(|p| *p /= sum);
    }
    points
}

/// Drop devices (other than the main one) whose share is too small to receive any
/// item: llama.cpp would still set up buffers there. Kept as is if the smaller set
/// no longer fits.
pub(super) fn prune(
    costs: &Costs,
    k: u32,
    cands: Vec<Candidate>,
    weights: Vec<f32>,
) -> (Vec<Candidate>, Vec<f32>) {
    let lay = layout(costs, k, &weights);
    let keep: Vec<usize> = (0..cands.len())
        .filter(|i| *i == 0 || lay.items[*i] > 0)
        .collect();
    if keep.len() == cands.len() {
        return (cands, weights);
    }
    let fewer: Vec<Candidate> = keep.iter().map(|i| cands[*i]).collect();
    let raw: Vec<f64> = keep.iter().map(|i| f64::from(weights[*i])).collect();
    let fewer_weights = normalise(&raw);
    if lay.fits(&cands) && !layout(costs, k, &fewer_weights).fits(&fewer) {
        return (cands, weights);
    }
    (fewer, fewer_weights)
}

/// Largest `n_gpu_layers` whose layout fits every device (0 = not even the head fits).
pub(super) fn max_layers(costs: &Costs, cands: &[Candidate], weights: &[f32]) -> u32 {
    (1..=costs.all())
        .rev()
        .find(|k| layout(costs, *k, weights).fits(cands))
        .unwrap_or(0)
}
