use super::*;
use crate::cli::{ModelSources, ServerFlags};

/// A temp folder with fake model files (only existence matters here).
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vram-llm-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("models/sub")).unwrap();
        for f in ["models/a.gguf", "models/sub/b.gguf", "models/c.gguf"] {
            std::fs::write(dir.join(f), b"GGUF").unwrap();
        }
        Dir(dir)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sources(config: Option<PathBuf>) -> ModelSources {
    ModelSources { config, ..Default::default() }
}

#[test]
fn flag_beats_file_key_beats_default() {
    let d = Dir::new("precedence");
    let cfg = d.write(
        "c.toml",
        "[server]\nport = 9000\nmax_queue = 7\nmax_wait = \"2s\"\n[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n",
    );
    let flags = ServerFlags { port: Some(9100), ..Default::default() };
    let c = Config::load(&sources(Some(cfg)), &flags).unwrap();
    assert_eq!(c.server.port, 9100, "flag wins");
    assert_eq!(c.server.max_queue, 7, "file key beats default");
    assert_eq!(c.server.max_wait, Duration::from_secs(2));
    assert_eq!(c.server.hosts, [DEFAULT_HOST]);
    assert_eq!(c.models[0].path, d.0.join("models/a.gguf"), "relative to the config file");
}

#[test]
fn host_takes_several_addresses_as_llama_server() {
    use clap::Parser;
    let cli = crate::cli::Cli::try_parse_from(["vram-llm", "serve", "--host", "127.0.0.1,::1", "--model", "m.gguf"]).unwrap();
    let crate::cli::Command::Serve(args) = cli.command else { panic!("serve") };
    let d = Dir::new("hosts");
    let cfg = d.write("c.toml", "[server]\nhost = \"0.0.0.0\"\n[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n");
    let c = Config::load(&sources(Some(cfg)), &args.server).unwrap();
    assert_eq!(c.server.hosts, ["127.0.0.1".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()], "the flag's list beats the file's host");
}

#[test]
fn the_kv_cache_dir_is_relative_to_the_config_file_and_off_by_default() {
    let d = Dir::new("kvdir");
    let cfg = d.write("c.toml", "[server]\nkv_cache_dir = \"kv\"\n[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n");
    let c = Config::load(&sources(Some(cfg)), &ServerFlags::default()).unwrap();
    assert_eq!(c.server.kv_cache_dir, Some(d.0.join("kv")));
    assert_eq!(c.server.kv_cache_dir_mib, DEFAULT_KV_CACHE_DIR_MIB);
    let plain = d.write("plain.toml", "[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n");
    assert_eq!(Config::load(&sources(Some(plain)), &ServerFlags::default()).unwrap().server.kv_cache_dir, None);
}

#[test]
fn swa_full_is_a_server_default_a_model_may_override() {
    let d = Dir::new("swafull");
    let cfg = d.write(
        "c.toml",
        "[server]\nswa_full = true\n[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n[[models]]\nname = \"c\"\npath = \"models/c.gguf\"\nswa_full = false\n",
    );
    let c = Config::load(&sources(Some(cfg)), &ServerFlags::default()).unwrap();
    assert_eq!(c.models.iter().map(|m| m.swa_full).collect::<Vec<_>>(), [true, false]);
    let cli = ModelSources { model: vec![d.0.join("models/a.gguf").display().to_string()], ..Default::default() };
    let c = Config::load(&cli, &ServerFlags::default()).unwrap();
    assert!(!c.models[0].swa_full, "off by default");
}

#[test]
fn model_keys_are_read_and_checked() {
    let d = Dir::new("models");
    let cfg = d.write(
        "c.toml",
        r#"
[server]
parallel = 2
[[models]]
name = "a"
path = "models/a.gguf"
aliases = ["first"]
ctx_size = 1024
ttl = "5m"
preload = true
exclusive = true
[models.sampling]
temperature = 0.2
max_tokens = 64
"#,
    );
    let c = Config::load(&sources(Some(cfg)), &ServerFlags::default()).unwrap();
    let m = &c.models[0];
    assert_eq!(m.aliases, vec!["first".to_string()]);
    assert_eq!((m.ctx_size, m.parallel), (Some(512), 2), "ctx_size is the model's: split across the 2 slots");
    assert_eq!(m.ttl, Some(Duration::from_secs(300)));
    assert!(m.preload && m.exclusive);
    assert_eq!(m.sampling.temperature, 0.2);
    assert_eq!(m.max_tokens, Some(64));
}

#[test]
fn errors_name_the_file_and_the_key() {
    let d = Dir::new("errors");
    let cases = [
        ("[[models]]\nname = \"a\"\npath = \"models/missing.gguf\"\n", "models[0] (`a`): path"),
        ("[server]\nprot = 1\n", "unknown field `prot`"),
        ("[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n[models.sampling]\ntop_p = 2.0\n", "sampling.top_p"),
        ("[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\nparallel = 0\n", "parallel"),
        ("[server]\nmax_wait = \"soon\"\n", "soon"),
        (
            "[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n[[models]]\nname = \"a\"\npath = \"models/c.gguf\"\n",
            "`a` is already used",
        ),
        (
            "[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n[[models]]\nname = \"c\"\npath = \"models/c.gguf\"\naliases = [\"a\"]\n",
            "alias `a`",
        ),
    ];
    for (text, want) in cases {
        let cfg = d.write("bad.toml", text);
        let e = Config::load(&sources(Some(cfg)), &ServerFlags::default()).unwrap_err();
        assert!(e.contains("bad.toml"), "{e}");
        assert!(e.contains(want), "{text} -> {e}");
    }
}

#[test]
fn cli_models_beat_config_models_beat_the_models_dir() {
    let d = Dir::new("merge");
    let cfg = d.write("c.toml", "[[models]]\nname = \"a\"\npath = \"models/c.gguf\"\nctx_size = 999\n");
    let src = ModelSources {
        config: Some(cfg),
        models_dir: Some(d.0.join("models")),
        model: vec![format!("b={}", d.0.join("models/a.gguf").display())],
        alias: None,
    };
    let c = Config::load(&src, &ServerFlags::default()).unwrap();
    let by_name = |n: &str| c.models.iter().find(|m| m.id == n).unwrap();
    assert_eq!(c.models.len(), 3, "{:?}", c.models.iter().map(|m| &m.id).collect::<Vec<_>>());
    assert_eq!(by_name("a").ctx_size, Some(999), "the config entry replaced the scanned a.gguf");
    assert_eq!(by_name("b").path, d.0.join("models/a.gguf"), "--model replaced the scanned sub/b.gguf");
    assert_eq!(by_name("c").path, d.0.join("models/c.gguf"));
}

#[test]
fn no_model_at_all_is_an_error() {
    let e = Config::load(&ModelSources::default(), &ServerFlags::default()).unwrap_err();
    assert!(e.contains("no model"), "{e}");
}

#[test]
fn shipped_example_config_parses() {
    let text = include_str!("../../config/vram-llm.toml");
    let parsed: Result<file::ConfigFile, _> = toml::from_str(text);
    assert!(parsed.is_ok(), "{parsed:?}");
}

#[test]
fn gpu_placement_keys_merge_like_the_other_server_keys() {
    let d = Dir::new("gpu");
    let cfg = d.write(
        "c.toml",
        "[server]\nreserve_mib = 2048\ndevices = [0, 2]\nsplit_mode = \"row\"\ngpus_from = \"gpus.json\"\n[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n",
    );
    let mut flags = ServerFlags::default();
    flags.gpu.reserve_mib = Some(512);
    let c = Config::load(&sources(Some(cfg)), &flags).unwrap();
    let p = &c.server.placement;
    assert_eq!(p.reserve_mib, 512, "flag wins");
    assert_eq!(p.devices, Some(vec![0, 2]));
    assert_eq!(p.split_mode, crate::gpu::SplitMode::Row);
    assert_eq!(c.server.gpus_from, Some(d.0.join("gpus.json")));
}

#[test]
fn per_model_placement_keys_win_over_the_server_ones() {
    let d = Dir::new("gpu-model");
    let cfg = d.write(
        "c.toml",
        "[server]\ndevices = [0, 1]\nsplit_mode = \"row\"\nreserve_mib = 512\nuse_fit_params = true\n\
         [[models]]\nname = \"a\"\npath = \"models/a.gguf\"\ndevices = [1, 2]\nmain_gpu = 2\nsplit_mode = \"layer\"\ntensor_split = [1, 3]\nn_gpu_layers = 20\n\
         [[models]]\nname = \"c\"\npath = \"models/c.gguf\"\n",
    );
    let c = Config::load(&sources(Some(cfg)), &ServerFlags::default()).unwrap();
    let a = super::placement::model_options(&c.server.placement, &c.models[0]);
    assert_eq!(a.devices, Some(vec![1, 2]));
    assert_eq!((a.main_gpu, a.split_mode), (Some(2), crate::gpu::SplitMode::Layer));
    assert_eq!(a.tensor_split_override, Some(vec![1.0, 3.0]));
    assert_eq!((a.n_gpu_layers_override, a.reserve_mib), (Some(20), 512), "server keys the model leaves alone still apply");
    assert!(!a.use_fit_params, "a model's own placement keys win over llama.cpp's fitter");
    let other = super::placement::model_options(&c.server.placement, &c.models[1]);
    assert_eq!((other.devices, other.split_mode), (Some(vec![0, 1]), crate::gpu::SplitMode::Row));
    assert!(other.use_fit_params);
}

#[test]
fn a_bad_per_model_tensor_split_names_the_model() {
    let d = Dir::new("gpu-model-bad");
    let cfg = d.write("c.toml", "[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\ntensor_split = [0, 0]\n");
    let err = Config::load(&sources(Some(cfg)), &ServerFlags::default()).unwrap_err();
    assert!(err.contains("tensor_split") && err.contains("models"), "{err}");
}

#[test]
fn use_fit_params_and_a_simulated_gpu_list_exclude_each_other() {
    let d = Dir::new("fit");
    let cfg = d.write("c.toml", "[server]\nuse_fit_params = true\n[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n");
    let c = Config::load(&sources(Some(cfg.clone())), &ServerFlags::default()).unwrap();
    assert!(c.server.placement.use_fit_params);
    assert!(super::placement::model_options(&c.server.placement, &c.models[0]).use_fit_params);
    let mut flags = ServerFlags::default();
    flags.gpu.gpus_from = Some(d.0.join("gpus.json"));
    let err = Config::load(&sources(Some(cfg)), &flags).unwrap_err();
    assert!(err.contains("use_fit_params") && err.contains("gpus_from"), "{err}");
}

#[test]
fn cors_origins_must_be_origins() {
    let d = Dir::new("cors");
    let cfg = d.write("c.toml", "[server]\ncors_origins = [\"http://localhost:3000\", \"https://app.example.com\"]\n[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n");
    let c = Config::load(&sources(Some(cfg.clone())), &ServerFlags::default()).unwrap();
    assert_eq!(c.server.cors_origins, ["http://localhost:3000", "https://app.example.com"]);
    for bad in ["localhost:3000", "http://x.com/path", "http://", "ftp://x"] {
        let flags = ServerFlags { cors_origins: Some(vec![bad.into()]), ..Default::default() };
        let err = Config::load(&sources(Some(cfg.clone())), &flags).unwrap_err();
        assert!(err.contains("cors_origins") && err.contains(bad), "{err}");
    }
    let any = ServerFlags { cors_origins: Some(vec!["*".into()]), ..Default::default() };
    assert_eq!(Config::load(&sources(Some(cfg)), &any).unwrap().server.cors_origins, ["*"]);
}

#[test]
fn an_empty_key_is_refused_and_a_key_file_is_read() {
    let d = Dir::new("keys");
    let cfg = d.write("c.toml", "[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n");
    let empty = ServerFlags { api_key: Some(String::new()), ..Default::default() };
    let err = Config::load(&sources(Some(cfg.clone())), &empty).unwrap_err();
    assert!(err.contains("api_key is empty"), "{err}");
    let blank_file = ServerFlags { api_key_file: Some(d.write("blank", "\n")), ..Default::default() };
    assert!(Config::load(&sources(Some(cfg.clone())), &blank_file).unwrap_err().contains("api_key is empty"));
    let file = ServerFlags { api_key_file: Some(d.write("key", "s3cret\nignored\n")), ..Default::default() };
    assert_eq!(Config::load(&sources(Some(cfg.clone())), &file).unwrap().server.api_key.as_deref(), Some("s3cret"));
    let token = d.write("t.toml", "[server]\nadmin_token = \"\"\n[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n");
    assert!(Config::load(&sources(Some(token)), &ServerFlags::default()).unwrap_err().contains("admin_token is empty"));
}

#[test]
fn engine_knobs_merge_flag_over_server_key_over_model_key_order() {
    use crate::gguf::KvCacheType;
    use crate::types::FlashAttn;
    let d = Dir::new("knobs");
    let cfg = d.write(
        "c.toml",
        "[server]\ncache_type_k = \"q8_0\"\nflash_attn = \"on\"\nubatch_size = 256\n\
         [[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n\
         [[models]]\nname = \"c\"\npath = \"models/c.gguf\"\ncache_type_v = \"q4_0\"\nno_mmap = true\ncontext_shift = true\nctx_checkpoints = 2\n",
    );
    let c = Config::load(&sources(Some(cfg.clone())), &ServerFlags::default()).unwrap();
    let (a, cm) = (c.models[0].knobs, c.models[1].knobs);
    assert_eq!((a.cache_type_k, a.cache_type_v, a.flash_attn, a.ubatch_size, a.no_mmap), (KvCacheType::Q8_0, KvCacheType::F16, FlashAttn::On, Some(256), false));
    assert_eq!((cm.cache_type_k, cm.cache_type_v, cm.no_mmap), (KvCacheType::Q8_0, KvCacheType::Q4_0, true), "a model key adds to the server's");
    assert_eq!((a.context_shift, cm.context_shift), (false, true));
    assert_eq!((a.ctx_checkpoints, cm.ctx_checkpoints), (None, Some(2)), "ctx_checkpoints per model");
    let flags = ServerFlags { ctx_checkpoints: Some(0), ..Default::default() };
    let with_flag = Config::load(&sources(Some(cfg.clone())), &flags).unwrap();
    assert_eq!(with_flag.models[0].knobs.ctx_checkpoints, Some(0), "the flag sets the server's default");
    assert_eq!(with_flag.models[1].knobs.ctx_checkpoints, Some(2), "a model's own key wins");
    let flags = ServerFlags { context_shift: Some(true), ..Default::default() };
    assert!(Config::load(&sources(Some(cfg.clone())), &flags).unwrap().models[0].knobs.context_shift, "the flag turns it on");
    let flags = ServerFlags { cache_type_k: Some(KvCacheType::Q4_0), ..Default::default() };
    assert_eq!(Config::load(&sources(Some(cfg.clone())), &flags).unwrap().models[0].knobs.cache_type_k, KvCacheType::Q4_0, "the flag wins");
    // A quantized V cache without flash attention, and an unknown type, are named.
    let off = ServerFlags { flash_attn: Some(FlashAttn::Off), ..Default::default() };
    let err = Config::load(&sources(Some(cfg)), &off).unwrap_err();
    assert!(err.contains("models[1]") && err.contains("cache_type_v needs flash attention"), "{err}");
    let bad = d.write("b.toml", "[server]\ncache_type_k = \"q9\"\n[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n");
    let err = Config::load(&sources(Some(bad)), &ServerFlags::default()).unwrap_err();
    assert!(err.contains("[server]: cache_type_k `q9`"), "{err}");
}

#[test]
fn pooling_and_embeddings_only_are_per_model_keys_and_flags() {
    use crate::types::Pooling;
    let d = Dir::new("embeddings");
    let cfg = d.write(
        "c.toml",
        "[server]\npooling = \"cls\"\n\
         [[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n\
         [[models]]\nname = \"e\"\npath = \"models/c.gguf\"\npooling = \"last\"\nembeddings_only = true\n",
    );
    let c = Config::load(&sources(Some(cfg.clone())), &ServerFlags::default()).unwrap();
    let (a, e) = (c.models[0].knobs, c.models[1].knobs);
    assert_eq!((a.pooling, a.embeddings_only), (Some(Pooling::Cls), false));
    assert_eq!((e.pooling, e.embeddings_only), (Some(Pooling::Last), true));
    let flags = ServerFlags { pooling: Some(Pooling::Mean), embeddings_only: Some(true), ..Default::default() };
    let c = Config::load(&sources(Some(cfg)), &flags).unwrap();
    assert_eq!((c.models[0].knobs.pooling, c.models[0].knobs.embeddings_only), (Some(Pooling::Mean), true), "the flags are every model's default");
    let bad = d.write("b.toml", "[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\npooling = \"max\"\n");
    assert!(Config::load(&sources(Some(bad)), &ServerFlags::default()).unwrap_err().contains("max"));
}

#[test]
fn reasoning_switches_are_per_model_keys_and_flags() {
    use crate::types::{Reasoning, ReasoningFormat};
    let d = Dir::new("reasoning");
    let cfg = d.write(
        "c.toml",
        "[server]\nreasoning = \"off\"\n\
         [[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n\
         [[models]]\nname = \"t\"\npath = \"models/c.gguf\"\nreasoning = \"on\"\nreasoning_format = \"none\"\n",
    );
    let c = Config::load(&sources(Some(cfg.clone())), &ServerFlags::default()).unwrap();
    let (a, t) = (c.models[0].defaults(), c.models[1].defaults());
    assert_eq!((a.reasoning, a.reasoning_format), (Reasoning::Off, ReasoningFormat::Auto));
    assert_eq!((t.reasoning, t.reasoning_format), (Reasoning::On, ReasoningFormat::None));
    let flags = ServerFlags { reasoning_format: Some(ReasoningFormat::Deepseek), ..Default::default() };
    let c = Config::load(&sources(Some(cfg)), &flags).unwrap();
    assert_eq!(c.models[0].defaults().reasoning_format, ReasoningFormat::Deepseek);
    assert_eq!(c.models[1].defaults().reasoning_format, ReasoningFormat::None, "the model's key wins");
    let bad = d.write("b.toml", "[server]\nreasoning = \"maybe\"\n");
    assert!(Config::load(&sources(Some(bad)), &ServerFlags::default()).unwrap_err().contains("maybe"));
}

#[test]
fn the_json_schema_engine_is_llama_by_default_and_llguidance_only_in_a_build_with_it() {
    use crate::types::JsonSchemaEngine;
    let d = Dir::new("schema-engine");
    let two = "[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n[[models]]\nname = \"c\"\npath = \"models/c.gguf\"\n";
    let plain = d.write("plain.toml", two);
    let c = Config::load(&sources(Some(plain.clone())), &ServerFlags::default()).unwrap();
    assert!(c.models.iter().all(|m| m.json_schema_engine == JsonSchemaEngine::Llama), "llama.cpp's by default");
    let keyed = d.write("keyed.toml", &format!("[server]\njson_schema_engine = \"llguidance\"\n{two}json_schema_engine = \"llama\"\n"));
    let flag = ServerFlags { json_schema_engine: Some(JsonSchemaEngine::Llguidance), ..Default::default() };
    if cfg!(feature = "llguidance") {
        let c = Config::load(&sources(Some(keyed)), &ServerFlags::default()).unwrap();
        let engines: Vec<_> = c.models.iter().map(|m| m.json_schema_engine).collect();
        assert_eq!(engines, [JsonSchemaEngine::Llguidance, JsonSchemaEngine::Llama], "a model's key wins over [server]");
        let c = Config::load(&sources(Some(plain)), &flag).unwrap();
        assert_eq!(c.models[0].defaults().json_schema_engine, JsonSchemaEngine::Llguidance, "requests see it");
    } else {
        let e = Config::load(&sources(Some(keyed)), &ServerFlags::default()).unwrap_err();
        assert!(e.contains("[server] json_schema_engine") && e.contains("--features llguidance"), "{e}");
        let e = Config::load(&sources(Some(plain)), &flag).unwrap_err();
        assert!(e.starts_with("--json-schema-engine: `llguidance` needs"), "{e}");
    }
}

#[test]
fn llama_server_flags_set_server_defaults_that_a_model_section_overrides() {
    use crate::cli::LlamaServerFlags;
    let d = Dir::new("llama-flags");
    let cfg = d.write(
        "c.toml",
        "[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\n\
         [[models]]\nname = \"c\"\npath = \"models/c.gguf\"\nttl = \"5s\"\n[models.sampling]\ntemperature = 0.1\nmax_tokens = 9\n",
    );
    let llama = LlamaServerFlags {
        temp: Some(0.3),
        seed: Some(42),
        n_predict: Some(64),
        cache_ram: Some(100),
        models_max: Some(2),
        sleep_idle_seconds: Some(30),
        no_slots: true,
        embedding: true,
        ..Default::default()
    };
    let c = Config::load(&sources(Some(cfg.clone())), &ServerFlags { llama, ..Default::default() }).unwrap();
    let (a, m) = (&c.models[0], &c.models[1]);
    assert_eq!((a.sampling.temperature, a.sampling.seed, a.max_tokens, a.ttl), (0.3, Some(42), Some(64), Some(Duration::from_secs(30))));
    assert_eq!((m.sampling.temperature, m.sampling.seed, m.max_tokens, m.ttl), (0.1, Some(42), Some(9), Some(Duration::from_secs(5))), "a model's keys win");
    assert!(a.knobs.embeddings_only, "--embedding is --embeddings-only");
    assert_eq!((c.server.kv_cache_mib, c.server.max_loaded_models, c.server.slots, c.server.metrics), (100, Some(2), false, true));
    // -1 sentinels: random seed, no limit.
    let llama = LlamaServerFlags { seed: Some(-1), n_predict: Some(-1), models_max: Some(0), ..Default::default() };
    let c = Config::load(&sources(Some(cfg.clone())), &ServerFlags { llama, ..Default::default() }).unwrap();
    assert_eq!((c.models[0].sampling.seed, c.models[0].max_tokens, c.server.max_loaded_models), (None, None, None));
    // A flag for a feature vram-llm lacks is refused by name.
    let llama = LlamaServerFlags { lora: vec!["x.gguf".into()], ..Default::default() };
    let err = Config::load(&sources(Some(cfg)), &ServerFlags { llama, ..Default::default() }).unwrap_err();
    assert!(err.contains("--lora"), "{err}");
}

#[test]
fn the_batch_holds_a_token_of_every_slot() {
    let d = Dir::new("batch");
    let cfg = d.write("c.toml", "[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\nparallel = 4\n");
    let small = ServerFlags { batch_size: Some(16), ..Default::default() };
    assert_eq!(Config::load(&sources(Some(cfg.clone())), &small).unwrap().server.batch_size, 16, "llama-server's tests use 16");
    let tiny = ServerFlags { batch_size: Some(2), ..Default::default() };
    let err = Config::load(&sources(Some(cfg)), &tiny).unwrap_err();
    assert!(err.contains("--batch-size 2") && err.contains("`a`"), "{err}");
}

#[test]
fn ctx_size_is_read_as_llama_servers_c() {
    // -c is the model's context: split across the slots when --parallel is
    // given, whole for each slot when it is not (llama-server's unified
    // default) or when --kv-unified says so.
    let d = Dir::new("ctx");
    let cli = ModelSources { model: vec![d.0.join("models/a.gguf").display().to_string()], ..Default::default() };
    let slot = |parallel: Option<u32>, kv_unified: bool, no_kv_unified: bool| {
        let llama = crate::cli::LlamaServerFlags { kv_unified, no_kv_unified, ..Default::default() };
        let flags = ServerFlags { ctx_size: Some(1024), parallel, llama, ..Default::default() };
        Config::load(&cli, &flags).map(|c| (c.models[0].ctx_size, c.models[0].parallel))
    };
    assert_eq!(slot(None, false, false), Ok((Some(1024), 4)));
    assert_eq!(slot(Some(2), false, false), Ok((Some(512), 2)));
    assert_eq!(slot(Some(2), true, false), Ok((Some(1024), 2)));
    assert_eq!(slot(None, false, true), Ok((Some(256), 4)));
    let err = slot(Some(128), false, false).unwrap_err();
    assert!(err.contains("8 tokens per slot") && err.contains("--kv-unified"), "{err}");
    // No -c: the default is per slot, whatever the slots.
    let c = Config::load(&cli, &ServerFlags { parallel: Some(2), ..Default::default() }).unwrap();
    assert_eq!(c.models[0].ctx_size, None);
    // A model's own parallel splits the server's ctx_size; its kv_unified keeps it whole.
    let cfg = d.write(
        "c.toml",
        "[server]\nctx_size = 4096\n[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\nparallel = 2\n\
         [[models]]\nname = \"b\"\npath = \"models/a.gguf\"\nparallel = 2\nkv_unified = true\n\
         [[models]]\nname = \"c\"\npath = \"models/a.gguf\"\n",
    );
    let c = Config::load(&sources(Some(cfg)), &ServerFlags::default()).unwrap();
    let got: Vec<_> = c.models.iter().map(|m| (m.id.as_str(), m.ctx_size)).collect();
    assert_eq!(got, [("a", Some(2048)), ("b", Some(4096)), ("c", Some(4096))]);
}

#[test]
fn alias_takes_several_names_and_tags_label_the_command_line_models() {
    // llama-server's --alias a,b,c: every name answers, the alphabetically
    // first is the id; --tags are listed as given.
    let d = Dir::new("alias");
    let cli = ModelSources {
        model: vec![d.0.join("models/a.gguf").display().to_string()],
        alias: Some("tinyllama-2, fim,code".into()),
        ..Default::default()
    };
    let llama = crate::cli::LlamaServerFlags { tags: Some("chat,fim,small".into()), ..Default::default() };
    let c = Config::load(&cli, &ServerFlags { llama, ..Default::default() }).unwrap();
    let m = &c.models[0];
    assert_eq!((m.id.as_str(), m.aliases.clone(), m.tags.clone()), ("code", vec!["fim".to_string(), "tinyllama-2".into()], vec!["chat".to_string(), "fim".into(), "small".into()]));
}

#[test]
fn a_model_is_a_path_or_a_hub_name_never_both() {
    let d = Dir::new("hf-keys");
    let both = d.write("b.toml", "[[models]]\nname = \"a\"\npath = \"models/a.gguf\"\nhf = \"org/x-GGUF\"\n");
    let e = Config::load(&sources(Some(both)), &ServerFlags::default()).unwrap_err();
    assert!(e.contains("models[0]") && e.contains("not several"), "{e}");
    let neither = d.write("n.toml", "[[models]]\nname = \"a\"\n");
    let e = Config::load(&sources(Some(neither)), &ServerFlags::default()).unwrap_err();
    assert!(e.contains("`path`") && e.contains("`hf`"), "{e}");
    let bad = d.write("r.toml", "[[models]]\nname = \"a\"\nhf = \"no-slash\"\n");
    let e = Config::load(&sources(Some(bad)), &ServerFlags::default()).unwrap_err();
    assert!(e.contains("hf") && e.contains("owner/name"), "{e}");
}

#[test]
fn a_hub_entry_is_its_cached_file_or_a_download_for_the_scheduler() {
    let d = Dir::new("hf-entry");
    let cache = d.0.join("cache");
    let (path, fetch) = super::hub::hub_entry("org/x-GGUF:q8_0", None, Some(&cache)).unwrap();
    assert_eq!(path, cache.join("models--org--x-GGUF"));
    assert_eq!(fetch, Some(crate::types::HubSource { repo: "org/x-GGUF:q8_0".into(), file: None }));
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.join("models--org--x-GGUF");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let file = repo.join("snapshots").join(commit).join("x-Q8_0.gguf");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"GGUF").unwrap();
    assert_eq!(super::hub::hub_entry("org/x-GGUF:q8_0", None, Some(&cache)).unwrap(), (file, None));
}
