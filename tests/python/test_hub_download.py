"""Models from the hub (issue 25): `vram-llm pull owner/repo[:QUANT]`,
`vram-llm serve -hf owner/repo[:QUANT]` and `--offline`, against the fake hub
(fakehub.py), and interop with huggingface_hub's cache.

The contract these tests pin (docs/hub-protocol.md):
- `pull` downloads into the Hugging Face hub cache (`LLAMA_CACHE`, else
  `HF_HUB_CACHE`, ...), honours `HF_ENDPOINT` and `HF_TOKEN`, and prints the
  cached path of the model file (the first part of a split model) as the last
  line of stdout; it exits non-zero with a message on stderr naming what was
  asked when it fails.
- `serve -hf` downloads what the cache lacks; a model already in the cache is
  used without any request to the hub; `--offline` never touches the network.
"""

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import huggingface_hub
from huggingface_hub import hf_hub_download

from conftest import launch, stop
from fakehub import GATED_FILE, GATED_REPO, GEMMA_FILE, GEMMA_REPO, LIAR_FILE, LIAR_REPO, TINY_REPO
from fakehub import file_sha256 as sha256

huggingface_hub.utils.disable_progress_bars()


def hub_env(hub, cache: Path, token=None, var="HF_HUB_CACHE") -> dict:
    """This process's environment less any hub settings, plus the fake hub,
    the cache in `var`, and `token` as HF_TOKEN."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING")) and k != "LLAMA_CACHE"}
    env.update({"HF_ENDPOINT": hub.endpoint, var: str(cache)})
    if token:
        env["HF_TOKEN"] = token
    return env


def pull(hub, cache: Path, name: str, *args, token=None, env=None):
    """`vram-llm pull name` -> (exit code, stdout, stderr)."""
    out = subprocess.run([os.environ["VRAM_LLM_BIN"], "pull", name, *args], env=env or hub_env(hub, cache, token),
                         capture_output=True, text=True, timeout=300)
    return out.returncode, out.stdout, out.stderr


def pulled(hub, cache: Path, name: str, **kw) -> Path:
    """The path `pull` printed last, after checking it succeeded."""
    code, out, err = pull(hub, cache, name, **kw)
    assert code == 0, f"pull {name} failed ({code}):\n{err}"
    return Path(out.strip().splitlines()[-1])


def snapshot(hub, cache: Path, repo: str, name: str) -> Path:
    return cache / f"models--{repo.replace('/', '--')}" / "snapshots" / hub.repos[repo].commit / name


def check_cached(hub, cache: Path, repo: str, name: str):
    """The hub cache layout: snapshots/<commit>/name -> blobs/<sha256>, the
    right bytes, refs/main = the commit, no temporary file left behind."""
    f = hub.file(repo, name)
    path = snapshot(hub, cache, repo, name)
    folder = cache / f"models--{repo.replace('/', '--')}"
    assert path.is_file(), f"{path} missing"
    assert path.resolve() == (folder / "blobs" / f.sha256).resolve()
    assert sha256(path) == f.sha256
    assert (folder / "refs/main").read_text().strip() == hub.repos[repo].commit
    strays = [p.name for p in (folder / "blobs").iterdir() if len(p.name) != 64]
    assert not strays, f"temporary files left in blobs/: {strays}"


def test_pull_fills_the_hub_cache_layout(fakehub, tmp_path):
    path = pulled(fakehub, tmp_path, f"{GEMMA_REPO}:Q4_K_M")
    assert path == snapshot(fakehub, tmp_path, GEMMA_REPO, GEMMA_FILE)
    check_cached(fakehub, tmp_path, GEMMA_REPO, GEMMA_FILE)
    assert fakehub.bytes_served(GEMMA_REPO, GEMMA_FILE) == fakehub.file(GEMMA_REPO, GEMMA_FILE).size
    # huggingface_hub finds it where it would have put it.
    assert Path(hf_hub_download(GEMMA_REPO, GEMMA_FILE, cache_dir=tmp_path, local_files_only=True)) == path


def test_llama_cache_comes_before_hf_hub_cache(fakehub, tmp_path):
    env = hub_env(fakehub, tmp_path / "llama", var="LLAMA_CACHE")
    env["HF_HUB_CACHE"] = str(tmp_path / "hf")
    path = pulled(fakehub, tmp_path, f"{TINY_REPO}:Q8_0", env=env)
    assert path == snapshot(fakehub, tmp_path / "llama", TINY_REPO, "tiny-Q8_0.gguf")
    assert not (tmp_path / "hf").exists()


def test_pull_resumes_after_a_cut_connection(fakehub, tmp_path):
    f = fakehub.file(GEMMA_REPO, GEMMA_FILE)
    fakehub.drop_once(GEMMA_REPO, GEMMA_FILE)
    pulled(fakehub, tmp_path, GEMMA_REPO)
    check_cached(fakehub, tmp_path, GEMMA_REPO, GEMMA_FILE)
    assert any(r.dropped for r in fakehub.requests)
    assert fakehub.bytes_served(GEMMA_REPO, GEMMA_FILE) < 1.5 * f.size, "restarted instead of resumed"


def test_a_large_file_comes_over_several_connections_or_one_without_ranges(fakehub, tmp_path):
    f = fakehub.file(GEMMA_REPO, GEMMA_FILE)
    pulled(fakehub, tmp_path / "ranges", GEMMA_REPO)
    gets = [r for r in fakehub.requests if r.server == "cdn" and r.method == "GET"]
    assert len(gets) == 4 and len({r.range for r in gets}) == 4 and all(r.status == 206 for r in gets), fakehub.routes()
    assert fakehub.bytes_served(GEMMA_REPO, GEMMA_FILE) == f.size
    fakehub.reset()
    fakehub.accept_ranges = False
    pulled(fakehub, tmp_path / "whole", GEMMA_REPO)
    check_cached(fakehub, tmp_path / "whole", GEMMA_REPO, GEMMA_FILE)
    # The range requests were answered with the whole file (200) and dropped; one connection fetched it.
    assert any(r.status == 200 for r in fakehub.requests if r.server == "cdn"), fakehub.routes()


def test_pull_resumes_after_a_restart(fakehub, tmp_path):
    f = fakehub.file(GEMMA_REPO, GEMMA_FILE)
    stalled = fakehub.stall_once(GEMMA_REPO, GEMMA_FILE)
    proc = subprocess.Popen([os.environ["VRAM_LLM_BIN"], "pull", GEMMA_REPO], env=hub_env(fakehub, tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert stalled.wait(120), "the download never reached half the file"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        fakehub.release()
    assert not snapshot(fakehub, tmp_path, GEMMA_REPO, GEMMA_FILE).exists(), "a half file in snapshots/"
    pulled(fakehub, tmp_path, GEMMA_REPO)
    check_cached(fakehub, tmp_path, GEMMA_REPO, GEMMA_FILE)
    # Both runs together: the second one kept what the first one wrote.
    assert fakehub.bytes_served(GEMMA_REPO, GEMMA_FILE) < 1.5 * f.size, "restarted instead of resumed"


def test_a_second_pull_downloads_nothing(fakehub, tmp_path):
    first = pulled(fakehub, tmp_path, GEMMA_REPO)
    fakehub.reset()
    assert pulled(fakehub, tmp_path, GEMMA_REPO) == first
    assert fakehub.bytes_served() == 0 and fakehub.count(route="blob") == 0


def test_a_split_model_is_fetched_whole(fakehub, tmp_path):
    path = pulled(fakehub, tmp_path, TINY_REPO)  # no quant: Q4_K_M, in two parts
    assert path == snapshot(fakehub, tmp_path, TINY_REPO, "tiny-Q4_K_M-00001-of-00002.gguf")
    for part in ("tiny-Q4_K_M-00001-of-00002.gguf", "tiny-Q4_K_M-00002-of-00002.gguf"):
        check_cached(fakehub, tmp_path, TINY_REPO, part)
    assert fakehub.count(route="blob", file="tiny-Q8_0.gguf") == 0


def test_the_quant_picks_the_file_as_llama_cpp_does(fakehub, tmp_path):
    # Case-insensitive; the mmproj listed first is never the model; a file in a folder is found.
    for quant, name in [("q8_0", "tiny-Q8_0.gguf"), ("F16", "tiny-F16.gguf"), ("Q6_K", "extra/tiny-Q6_K.gguf")]:
        assert pulled(fakehub, tmp_path, f"{TINY_REPO}:{quant}") == snapshot(fakehub, tmp_path, TINY_REPO, name)


def test_an_unknown_quant_names_it_and_lists_the_available_ones(fakehub, tmp_path):
    code, _, err = pull(fakehub, tmp_path, f"{TINY_REPO}:Q2_K")
    assert code != 0
    assert "Q2_K" in err and TINY_REPO in err, err
    assert all(q in err for q in ("Q4_K_M", "Q8_0", "F16")), f"available quants not listed:\n{err}"
    assert fakehub.bytes_served() == 0


def test_a_gated_repo_wants_hf_token(fakehub, tmp_path):
    code, _, err = pull(fakehub, tmp_path, GATED_REPO)
    assert code != 0
    assert GATED_REPO in err and ("401" in err or "gated" in err.lower()), err
    assert "HF_TOKEN" in err, f"the message should say how to get in:\n{err}"
    path = pulled(fakehub, tmp_path, GATED_REPO, token=fakehub.token)
    assert path == snapshot(fakehub, tmp_path, GATED_REPO, GATED_FILE)
    check_cached(fakehub, tmp_path, GATED_REPO, GATED_FILE)
    cdn_tokens = [r.token for r in fakehub.requests if r.server == "cdn"]
    assert cdn_tokens and not any(cdn_tokens), "HF_TOKEN must not leave the hub for the CDN"


def test_a_missing_repo_is_named(fakehub, tmp_path):
    code, _, err = pull(fakehub, tmp_path, "nobody/nothing-GGUF")
    assert code != 0
    assert "nobody/nothing-GGUF" in err and "not found" in err.lower(), err


def test_a_lying_sha256_fails_and_leaves_no_file(fakehub, tmp_path):
    f = fakehub.file(LIAR_REPO, LIAR_FILE)
    code, _, err = pull(fakehub, tmp_path, LIAR_REPO)
    assert code != 0
    assert "sha256" in err.lower() and LIAR_FILE in err, err
    folder = tmp_path / "models--fakehub--liar-GGUF"
    left = [p for p in (folder / "snapshots").rglob("*") if not p.is_dir()] if (folder / "snapshots").exists() else []
    assert not left, f"files left in snapshots/: {left}"
    assert not (folder / "blobs" / f.advertised_sha256).exists() and not (folder / "blobs" / f.sha256).exists()


def test_serve_hf_downloads_what_the_cache_lacks(fakehub, tmp_path):
    proc, _ = launch(["-hf", f"{GEMMA_REPO}:Q4_K_M", "--ctx-size", "1024"], env=hub_env(fakehub, tmp_path))
    try:
        check_cached(fakehub, tmp_path, GEMMA_REPO, GEMMA_FILE)
        assert fakehub.bytes_served() == fakehub.file(GEMMA_REPO, GEMMA_FILE).size
    finally:
        stop(proc)


def test_offline_with_the_hub_down_uses_the_cache(fakehub, tmp_path):
    pulled(fakehub, tmp_path, GEMMA_REPO)
    fakehub.down()
    proc, _ = launch(["-hf", f"{GEMMA_REPO}:Q4_K_M", "--offline", "--ctx-size", "1024"], env=hub_env(fakehub, tmp_path))
    stop(proc)


def test_a_model_placed_by_huggingface_hub_is_used_without_the_hub(fakehub, tmp_path):
    hf_hub_download(GEMMA_REPO, GEMMA_FILE, endpoint=fakehub.endpoint, cache_dir=tmp_path, token=False)
    fakehub.reset()
    proc, _ = launch(["-hf", f"{GEMMA_REPO}:Q4_K_M", "--ctx-size", "1024"], env=hub_env(fakehub, tmp_path))
    stop(proc)
    assert fakehub.requests == [], fakehub.routes()
    path = pulled(fakehub, tmp_path, f"{GEMMA_REPO}:Q4_K_M")
    assert path == snapshot(fakehub, tmp_path, GEMMA_REPO, GEMMA_FILE)
    assert fakehub.bytes_served() == 0


def test_a_plain_url_is_downloaded_once_without_the_token(fakehub, tmp_path):
    url = f"{fakehub.endpoint}/{GEMMA_REPO}/resolve/main/{GEMMA_FILE}"
    f = fakehub.file(GEMMA_REPO, GEMMA_FILE)
    from fakehub import TOKEN
    path = pulled(fakehub, tmp_path, url, token=TOKEN)
    assert path.parent == tmp_path / "urls" and path.name.endswith(GEMMA_FILE), path
    assert sha256(path) == f.sha256
    assert all(r.token is None for r in fakehub.requests), "HF_TOKEN goes to the hub's API only, never to a URL"
    fakehub.reset()
    assert pulled(fakehub, tmp_path, url) == path
    assert fakehub.requests == [], "downloaded once"
    for args in (["--model-url", url], ["--model", url]):
        proc, base = launch([*args, "--ctx-size", "1024"], env=hub_env(fakehub, tmp_path))
        try:
            with urllib.request.urlopen(f"{base}/v1/models", timeout=30) as r:
                ids = [m["id"] for m in json.loads(r.read())["data"]]
            assert ids == [GEMMA_FILE.removesuffix(".gguf")], ids
        finally:
            stop(proc)
    assert fakehub.requests == []
