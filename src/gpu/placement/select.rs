//! Which GPUs take part (`devices`, usable free memory) and in what order
//! (`device_order`, `main_gpu`).

use super::*;

/// The selected GPUs in ascending index order, validating `devices`.
pub(super) fn select<'a>(
    gpus: &'a [GpuInfo],
    opts: &PlacementOptions,
) -> Result<Vec<&'a GpuInfo>, PlacementError> {
    let mut selected: Vec<&GpuInfo> = match &opts.devices {
        None => gpus.iter().collect(),
        Some(wanted) => {
            let mut out = Vec::with_capacity(wanted.len());
            for (pos, index) in wanted.iter().enumerate() {
                if wanted[..pos].contains(index) {
                    return Err(PlacementError::DuplicateDevice { index: *index });
                }
                let gpu = gpus.iter().find(|g| g.index == *index).ok_or_else(|| {
                    PlacementError::UnknownDevice {
                        index: *index,
                        available: gpus.iter().map(|g| g.index).collect(),
                    }
                })?;
                out.push(gpu);
            }
            out
        }
    };
    selected.sort_by_key(|g| g.index);
    Ok(selected)
}

/// Candidates in preference order (`device_order`, then `main_gpu` moved first).
pub(super) fn order(selected: &[&GpuInfo], opts: &PlacementOptions) -> Result<Vec<Candidate>, PlacementError> {
    let mut cands: Vec<Candidate> = selected
        .iter()
        .map(|g| Candidate {
            index: g.index,
            usable: g
                .free_mib
                .saturating_sub(opts.reserve_mib)
                .saturating_mul(MIB),
        })
        .collect();
    if opts.device_order == DeviceOrder::FreeDesc {
        // Stable sort: ties keep ascending index order.
        cands.sort_by_key(|c| std::cmp::Reverse(c.usable));
    }
    if let Some(main) = opts.main_gpu {
        let pos = cands.iter().position(|c| c.index == main).ok_or_else(|| {
            PlacementError::MainGpuNotSelected {
                index: main,
                selected: selected.iter().map(|g| g.index).collect(),
            }
        })?;
        let c = cands.remove(pos);
        cands.insert(0, c);
    }
    Ok(cands)
}
