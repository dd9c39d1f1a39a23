//! What GPUs there are and how much memory is free on each, numbered as CUDA numbers them.
//!
//! Three sources, picked by [`detect`]: a JSON file (`--gpus-from`, for tests and for
//! simulating machines), NVML (the real thing), or nothing (CPU mode).
//!
//! # Device order
//!
//! llama.cpp addresses GPUs by CUDA index. NVML enumerates devices in PCI bus order;
//! CUDA's default order is `FASTEST_FIRST`, and it follows PCI bus order only with
//! `CUDA_DEVICE_ORDER=PCI_BUS_ID` (or when all GPUs are the same model, where
//! "fastest first" ties fall back to bus order). [`NvmlInventory`] sorts devices by
//! PCI bus id, so its indices match CUDA's whenever `CUDA_DEVICE_ORDER=PCI_BUS_ID` is
//! set — recommended for every multi-GPU machine — and it warns once at start-up when
//! that variable is not set and the GPUs are of different models.
//! `CUDA_VISIBLE_DEVICES` is then applied the way CUDA applies it, see
//! [`resolve_visible_devices`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::placement::MIB;

/// One GPU as this process's CUDA sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// CUDA index (after `CUDA_VISIBLE_DEVICES` renumbering).
    pub index: u32,
    /// `GPU-…` UUID when known.
    pub uuid: Option<String>,
    pub name: String,
    pub total_mib: u64,
    pub free_mib: u64,
    pub used_mib: u64,
    /// GPU busy percentage over the last sample period, when known.
    pub utilization: Option<u32>,
}

/// A source of GPU snapshots. Every call queries afresh: free memory changes as
/// models (ours and other processes') load and unload.
pub trait GpuInventory: Send + Sync {
    fn gpus(&self) -> Result<Vec<GpuInfo>, GpuError>;

    /// Whether the free figures count what this process has allocated (true
    /// for NVML). A static list describes the machine before we load anything.
    fn counts_our_usage(&self) -> bool {
        true
    }

    /// Whether there are GPUs to place models on: a live source (NVML, even
    /// if its first answer was empty or failed) or a list that names some.
    fn has_gpus(&self) -> bool {
        self.counts_our_usage() || self.gpus().is_ok_and(|g| !g.is_empty())
    }
}

/// Failures reading a GPU list or querying NVML; each names the file/entry or the query.
#[derive(Debug, Error)]
pub enum GpuError {
    #[error("cannot read GPU list {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("GPU list {origin} is not valid JSON for a GPU list: {message}")]
    Parse { origin: String, message: String },
    #[error("GPU list {origin}, entry {entry} (index {index}): {message}")]
    InvalidEntry {
        origin: String,
        entry: usize,
        index: u32,
        message: String,
    },
    #[error("NVML query failed ({what}): {source}")]
    Nvml {
        what: String,
        source: nvml_wrapper::error::NvmlError,
    },
}

/// Pick the inventory: the JSON file if given, else NVML if it loads, else an empty
/// inventory (CPU mode). Only a bad JSON file is an error.
pub fn detect(gpus_from: Option<&Path>) -> Result<Box<dyn GpuInventory>, GpuError> {
    if let Some(path) = gpus_from {
        let inv = StaticInventory::from_json_file(path)?;
        tracing::info!(
            "using simulated GPUs from {}: {} GPU(s)",
            path.display(),
            inv.gpus.len()
        );
        return Ok(Box::new(inv));
    }
    match NvmlInventory::try_new() {
        Some(inv) => Ok(Box::new(inv)),
        None => Ok(Box::new(StaticInventory::default())),
    }
}

// ---------------------------------------------------------------- static (JSON) ----

/// A fixed list of GPUs, from a JSON file or string; also the empty CPU-mode inventory.
/// The list is taken as already in CUDA order: `CUDA_VISIBLE_DEVICES` is not applied.
#[derive(Debug, Clone, Default)]
pub struct StaticInventory {
    gpus: Vec<GpuInfo>,
}

/// One entry of the JSON format; `used_mib` defaults to `total_mib - free_mib`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuEntry {
    index: u32,
    #[serde(default)]
    uuid: Option<String>,
    name: String,
    total_mib: u64,
    free_mib: u64,
    #[serde(default)]
    used_mib: Option<u64>,
    #[serde(default)]
    utilization: Option<u32>,
}

impl StaticInventory {
    pub fn new(gpus: Vec<GpuInfo>) -> Self {
        Self { gpus }
    }

    /// Read `[{"index": 0, "name": "RTX 4090", "total_mib": 24564, "free_mib": 20480}, …]`.
    pub fn from_json_file(path: &Path) -> Result<Self, GpuError> {
        let text = std::fs::read_to_string(path).map_err(|source| GpuError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Same format as [`Self::from_json_file`]; errors name the source `<string>`.
    pub fn from_json_str(json: &str) -> Result<Self, GpuError> {
        Self::parse(json, "<string>")
    }

    fn parse(json: &str, origin: &str) -> Result<Self, GpuError> {
        let entries: Vec<GpuEntry> = serde_json::from_str(json).map_err(|e| GpuError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let mut gpus: Vec<GpuInfo> = Vec::with_capacity(entries.len());
        for (entry, e) in entries.into_iter().enumerate() {
            let invalid = |message: String| GpuError::InvalidEntry {
                origin: origin.to_string(),
                entry,
                index: e.index,
                message,
            };
            if e.free_mib > e.total_mib {
                return Err(invalid(format!(
                    "free_mib {} > total_mib {}",
                    e.free_mib, e.total_mib
                )));
            }
            if let Some(used) = e.used_mib.filter(|u| *u > e.total_mib) {
                return Err(invalid(format!(
                    "used_mib {used} > total_mib {}",
                    e.total_mib
                )));
            }
            if let Some(first) = gpus.iter().position(|g| g.index == e.index) {
                return Err(invalid(format!(
                    "index {} already used by entry {first}",
                    e.index
                )));
            }
            gpus.push(GpuInfo {
                index: e.index,
                uuid: e.uuid,
                name: e.name,
                total_mib: e.total_mib,
                free_mib: e.free_mib,
                used_mib: e.used_mib.unwrap_or(e.total_mib - e.free_mib),
                utilization: e.utilization,
            });
        }
        gpus.sort_by_key(|g| g.index);
        Ok(Self { gpus })
    }
}

impl GpuInventory for StaticInventory {
    fn gpus(&self) -> Result<Vec<GpuInfo>, GpuError> {
        Ok(self.gpus.clone())
    }

    /// The list is the machine as it is before we load anything.
    fn counts_our_usage(&self) -> bool {
        false
    }
}

// ------------------------------------------------------------- CUDA_VISIBLE_DEVICES ----

/// Result of applying `CUDA_VISIBLE_DEVICES` to the devices in CUDA order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibleDevices {
    /// Positions (in the unfiltered order) of the visible devices, in listed order;
    /// visible device `i` gets CUDA index `i`.
    pub positions: Vec<usize>,
    /// The entry at which the list stopped being read, if any (for a warning).
    pub stopped_at: Option<String>,
}

/// Apply `CUDA_VISIBLE_DEVICES` the way CUDA does. `spec` is the variable's value
/// (`None` = unset = all devices); `uuids` are the devices' UUIDs in CUDA order.
///
/// Entries are comma-separated indices or UUIDs (`GPU-…`, any unique prefix, case
/// insensitive); surrounding spaces are ignored. Reading stops at the first entry that
/// is not a valid, not-yet-listed device (so `-1` or an empty value hides all GPUs and
/// `0,-1,1` means only GPU 0). `MIG-…` entries are not supported and stop the list.
pub fn resolve_visible_devices(spec: Option<&str>, uuids: &[Option<&str>]) -> VisibleDevices {
    let Some(spec) = spec else {
        return VisibleDevices {
            positions: (0..uuids.len()).collect(),
            stopped_at: None,
        };
    };
    let mut positions = Vec::new();
    for raw in spec.split(',') {
        let entry = raw.trim();
        let found = match entry.parse::<usize>() {
            Ok(i) if entry.bytes().all(|b| b.is_ascii_digit()) && i < uuids.len() => Some(i),
            _ => uuid_position(entry, uuids),
        };
        match found {
            Some(p) if !positions.contains(&p) => positions.push(p),
            _ => {
                // A trailing empty entry ("0,1,") is just punctuation, not worth a warning.
                let stopped =
                    (!entry.is_empty() || positions.is_empty()).then(|| entry.to_string());
                return VisibleDevices {
                    positions,
                    stopped_at: stopped,
                };
            }
        }
    }
    VisibleDevices {
        positions,
        stopped_at: None,
    }
}

/// Position of the single device whose UUID starts with `entry` (`GPU-` required).
fn uuid_position(entry: &str, uuids: &[Option<&str>]) -> Option<usize> {
    let wanted = entry.to_ascii_lowercase();
    if !wanted.starts_with("gpu-") || wanted.len() <= 4 {
        return None;
    }
    let mut matches = uuids
        .iter()
        .enumerate()
        .filter(|(_, u)| u.is_some_and(|u| u.to_ascii_lowercase().starts_with(&wanted)));
    match (matches.next(), matches.next()) {
        (Some((p, _)), None) => Some(p),
        _ => None, // no match, or an ambiguous prefix
    }
}

// ---------------------------------------------------------------------------- NVML ----

/// Live GPU list from NVML (`libnvidia-ml.so`, loaded at run time).
pub struct NvmlInventory {
    nvml: nvml_wrapper::Nvml,
    /// `CUDA_VISIBLE_DEVICES` as read at start-up: CUDA reads it once per process too.
    visible: Option<String>,
}

/// A device as NVML reports it, before ordering and `CUDA_VISIBLE_DEVICES`.
struct RawGpu {
    /// (domain, bus, device, bus-id string): PCI bus order.
    pci: (u32, u32, u32, String),
    info: GpuInfo,
}

impl NvmlInventory {
    /// NVML if the library loads and the driver answers; otherwise `None` after one
    /// info line — a machine without an NVIDIA GPU is a normal CPU-mode machine.
    pub fn try_new() -> Option<Self> {
        let nvml = match nvml_wrapper::Nvml::init() {
            Ok(nvml) => nvml,
            Err(e) => {
                tracing::info!("NVML not available ({e}): running in CPU mode");
                return None;
            }
        };
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        let inv = Self { nvml, visible };
        match inv.gpus() {
            Ok(gpus) => {
                tracing::info!("NVML: {} GPU(s) visible", gpus.len());
                warn_if_order_ambiguous(&gpus);
            }
            Err(e) => tracing::warn!("NVML loaded but listing GPUs failed: {e}"),
        }
        Some(inv)
    }

    fn raw_gpus(&self) -> Result<Vec<RawGpu>, GpuError> {
        let count = self.nvml.device_count().map_err(|source| GpuError::Nvml {
            what: "device count".into(),
            source,
        })?;
        let mut out = Vec::new();
        for i in 0..count {
            // A device NVML cannot open is one CUDA cannot use either: leave it out.
            let dev = match self.nvml.device_by_index(i) {
                Ok(dev) => dev,
                Err(e) => {
                    tracing::warn!("NVML device {i} skipped: {e}");
                    continue;
                }
            };
            let pci = dev
                .pci_info()
                .map(|p| (p.domain, p.bus, p.device, p.bus_id))
                .unwrap_or((u32::MAX, u32::MAX, i, String::new()));
            // Unknown memory counts as none free, so placement never picks the device
            // while the indices of the others stay right.
            let (total, free, used) = match dev.memory_info() {
                Ok(m) => (m.total / MIB, m.free / MIB, m.used / MIB),
                Err(e) => {
                    tracing::warn!("NVML device {i}: memory info unavailable: {e}");
                    (0, 0, 0)
                }
            };
            out.push(RawGpu {
                pci,
                info: GpuInfo {
                    index: i,
                    uuid: dev.uuid().ok(),
                    name: dev.name().unwrap_or_else(|_| format!("GPU {i}")),
                    total_mib: total,
                    free_mib: free,
                    used_mib: used,
                    utilization: dev.utilization_rates().ok().map(|u| u.gpu),
                },
            });
        }
        Ok(out)
    }
}

/// Sort by PCI bus id, apply `CUDA_VISIBLE_DEVICES`, renumber 0..n.
fn cuda_order(mut raw: Vec<RawGpu>, visible: Option<&str>) -> (Vec<GpuInfo>, Option<String>) {
    raw.sort_by(|a, b| a.pci.cmp(&b.pci));
    let uuids: Vec<Option<&str>> = raw.iter().map(|r| r.info.uuid.as_deref()).collect();
    let vis = resolve_visible_devices(visible, &uuids);
    let gpus = vis
        .positions
        .iter()
        .zip(0u32..)
        .map(|(p, index)| GpuInfo {
            index,
            ..raw[*p].info.clone()
        })
        .collect();
    (gpus, vis.stopped_at)
}

impl GpuInventory for NvmlInventory {
    fn gpus(&self) -> Result<Vec<GpuInfo>, GpuError> {
        let (gpus, stopped_at) = cuda_order(self.raw_gpus()?, self.visible.as_deref());
        if let Some(entry) = stopped_at {
            tracing::debug!("CUDA_VISIBLE_DEVICES: list ends at invalid entry `{entry}`");
        }
        Ok(gpus)
    }
}

fn warn_if_order_ambiguous(gpus: &[GpuInfo]) {
    let mixed = gpus.iter().any(|g| g.name != gpus[0].name);
    let pci_order = std::env::var("CUDA_DEVICE_ORDER").is_ok_and(|v| v == "PCI_BUS_ID");
    if mixed && !pci_order {
        tracing::warn!(
            "GPUs of different models and CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA may number \
             them differently from NVML's PCI order; set CUDA_DEVICE_ORDER=PCI_BUS_ID"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Option<&'static str>> {
        let all = [
            Some("GPU-aaaa-1111"),
            Some("GPU-abcd-2222"),
            Some("GPU-bbbb-3333"),
            None,
        ];
        all[..n].to_vec()
    }

    fn vis(spec: Option<&str>, n: usize) -> Vec<usize> {
        resolve_visible_devices(spec, &ids(n)).positions
    }

    #[test]
    fn unset_shows_all() {
        assert_eq!(vis(None, 3), vec![0, 1, 2]);
    }

    #[test]
    fn empty_and_minus_one_hide_all() {
        assert_eq!(vis(Some(""), 3), Vec::<usize>::new());
        assert_eq!(vis(Some("-1"), 3), Vec::<usize>::new());
        assert_eq!(
            resolve_visible_devices(Some("-1"), &ids(3))
                .stopped_at
                .as_deref(),
            Some("-1")
        );
    }

    #[test]
    fn listed_order_renumbers() {
        assert_eq!(vis(Some("2,0"), 3), vec![2, 0]);
        assert_eq!(vis(Some(" 1 , 2 "), 3), vec![1, 2]);
    }

    #[test]
    fn invalid_entry_stops_the_list() {
        assert_eq!(vis(Some("0,-1,1"), 3), vec![0]);
        assert_eq!(vis(Some("1,7,0"), 3), vec![1]);
        assert_eq!(vis(Some("0,x"), 3), vec![0]);
        assert_eq!(vis(Some("1,1,0"), 3), vec![1], "a repeat stops the list");
        assert_eq!(vis(Some("+1"), 3), Vec::<usize>::new());
        let r = resolve_visible_devices(Some("0,1,"), &ids(3));
        assert_eq!((r.positions, r.stopped_at), (vec![0, 1], None));
    }

    #[test]
    fn uuids_and_prefixes() {
        assert_eq!(vis(Some("GPU-bbbb-3333,0"), 3), vec![2, 0]);
        assert_eq!(vis(Some("gpu-BBBB"), 3), vec![2]);
        assert_eq!(
            vis(Some("GPU-a"), 3),
            Vec::<usize>::new(),
            "ambiguous prefix"
        );
        assert_eq!(vis(Some("GPU-abc,GPU-aa"), 3), vec![1, 0]);
        assert_eq!(vis(Some("GPU-"), 3), Vec::<usize>::new());
        assert_eq!(vis(Some("MIG-aaaa"), 3), Vec::<usize>::new());
        assert_eq!(
            vis(Some("aaaa-1111"), 3),
            Vec::<usize>::new(),
            "GPU- prefix required"
        );
        assert_eq!(
            vis(Some("1,GPU-abcd-2222"), 3),
            vec![1],
            "same device twice"
        );
    }

    fn raw(bus: u32, name: &str, uuid: &str) -> RawGpu {
        RawGpu {
            pci: (0, bus, 0, format!("00000000:{bus:02X}:00.0")),
            info: GpuInfo {
                index: 99,
                uuid: Some(uuid.into()),
                name: name.into(),
                total_mib: 24564,
                free_mib: 20000,
                used_mib: 4564,
                utilization: None,
            },
        }
    }

    #[test]
    fn nvml_devices_sorted_by_bus_then_filtered_and_renumbered() {
        let devs = || {
            vec![
                raw(0x41, "B", "GPU-b"),
                raw(0x01, "A", "GPU-a"),
                raw(0x81, "C", "GPU-c"),
            ]
        };
        let (gpus, _) = cuda_order(devs(), None);
        let names: Vec<(u32, &str)> = gpus.iter().map(|g| (g.index, g.name.as_str())).collect();
        assert_eq!(names, vec![(0, "A"), (1, "B"), (2, "C")]);
        let (gpus, stop) = cuda_order(devs(), Some("2,GPU-a,9"));
        let names: Vec<(u32, &str)> = gpus.iter().map(|g| (g.index, g.name.as_str())).collect();
        assert_eq!(names, vec![(0, "C"), (1, "A")]);
        assert_eq!(stop.as_deref(), Some("9"));
    }

    #[test]
    fn json_defaults_and_sorting() {
        let inv = StaticInventory::from_json_str(
            r#"[{"index": 1, "name": "B", "total_mib": 8192, "free_mib": 1536, "utilization": 40},
                {"index": 0, "name": "A", "total_mib": 24564, "free_mib": 20480, "uuid": "GPU-x", "used_mib": 4000}]"#,
        )
        .expect("valid list");
        let gpus = inv.gpus().expect("static");
        assert_eq!(gpus[0].index, 0);
        assert_eq!(gpus[0].used_mib, 4000);
        assert_eq!(gpus[0].uuid.as_deref(), Some("GPU-x"));
        assert_eq!(gpus[1].used_mib, 8192 - 1536);
        assert_eq!(gpus[1].utilization, Some(40));
    }

    #[test]
    fn json_errors_name_origin_and_entry() {
        let e = StaticInventory::from_json_str(
            r#"[{"index": 0, "name": "A", "total_mib": 100, "free_mib": 50},
                {"index": 1, "name": "B", "total_mib": 100, "free_mib": 150}]"#,
        )
        .expect_err("free > total");
        assert_eq!(
            e.to_string(),
            "GPU list <string>, entry 1 (index 1): free_mib 150 > total_mib 100"
        );
        let e = StaticInventory::from_json_str(
            r#"[{"index": 3, "name": "A", "total_mib": 100, "free_mib": 50},
                {"index": 3, "name": "B", "total_mib": 100, "free_mib": 50}]"#,
        )
        .expect_err("duplicate");
        assert!(
            e.to_string()
                .contains("entry 1 (index 3): index 3 already used by entry 0"),
            "{e}"
        );
        let e = StaticInventory::from_json_str(r#"[{"index": 0, "name": "A", "total_mib": 1}]"#)
            .expect_err("missing field");
        assert!(e.to_string().contains("free_mib"), "{e}");
        let e = StaticInventory::from_json_str(
            r#"[{"index": 0, "name": "A", "total_mib": 1, "free_mib": 1, "fre": 2}]"#,
        )
        .expect_err("unknown field");
        assert!(e.to_string().contains("fre"), "{e}");
    }

    #[test]
    fn file_errors_name_the_file() {
        let missing = Path::new("tests/fixtures/gpus/does-not-exist.json");
        let e = StaticInventory::from_json_file(missing).expect_err("missing file");
        assert!(e.to_string().contains("does-not-exist.json"), "{e}");
        let dir = std::env::temp_dir().join(format!("vram-llm-gpu-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let bad = dir.join("bad.json");
        std::fs::write(
            &bad,
            r#"[{"index": 0, "name": "A", "total_mib": 1, "free_mib": 2}]"#,
        )
        .expect("write");
        let e = StaticInventory::from_json_file(&bad).expect_err("invalid entry");
        assert!(e.to_string().contains("bad.json, entry 0 (index 0)"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn all_fixtures_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpus");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("fixture dir") {
            let path = entry.expect("dir entry").path();
            StaticInventory::from_json_file(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
        assert!(n >= 6, "found {n} fixtures");
    }

    #[test]
    fn detect_prefers_file_and_never_fails_without_nvml() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpus/one_24gb.json");
        let inv = detect(Some(&path)).expect("fixture");
        assert_eq!(inv.gpus().expect("static").len(), 1);
        // Without a file: NVML on a GPU machine, the empty inventory elsewhere. Either way Ok.
        let inv = detect(None).expect("no error without a file");
        assert!(inv.gpus().is_ok());
    }
}
