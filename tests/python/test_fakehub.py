"""The fake hub (fakehub.py) is faithful: huggingface_hub's own client
downloads from it into the hub cache layout, resumes after a cut connection,
and sees the errors the real hub gives. Needs no vram-llm change; the same
hub drives test_hub_download.py (issue 25)."""

import http.client
import os
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import huggingface_hub
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from fakehub import (
    GATED_FILE,
    GATED_REPO,
    GEMMA_FILE,
    GEMMA_REPO,
    LIAR_FILE,
    LIAR_REPO,
    TINY_REPO,
    FakeHub,
    tiny_repo,
)
from fakehub import file_sha256 as sha256

huggingface_hub.utils.disable_progress_bars()


def download(hub, cache, repo, name, token=False, **kw) -> Path:
    return Path(hf_hub_download(repo, name, endpoint=hub.endpoint, cache_dir=cache, token=token, **kw))


def request(url, method="GET", headers=None):
    """(status, headers, body) of one plain request, no redirects followed."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request(method, u.path + (f"?{u.query}" if u.query else ""), headers=headers or {})
    r = conn.getresponse()
    out = (r.status, dict(r.getheaders()), r.read())
    conn.close()
    return out


def test_hf_hub_download_fills_the_hub_cache_layout(fakehub, tmp_path):
    repo = fakehub.repos[GEMMA_REPO]
    f = repo.file(GEMMA_FILE)
    path = download(fakehub, tmp_path, GEMMA_REPO, GEMMA_FILE)

    folder = tmp_path / "models--ggml-org--gemma-3-270m-GGUF"
    assert path == folder / "snapshots" / repo.commit / GEMMA_FILE
    assert path.is_symlink() and os.readlink(path) == f"../../blobs/{f.sha256}"
    assert (folder / "refs/main").read_text() == repo.commit
    assert sha256(path) == f.sha256 and path.stat().st_size == f.size
    assert sorted(p.name for p in (folder / "blobs").iterdir()) == [f.sha256]
    # One HEAD on resolve (its 302 names the commit, sha256 and size; not
    # followed off the hub's host), then one GET straight to the CDN.
    assert [(r.method, r.server, r.route, r.status) for r in fakehub.requests] == [
        ("HEAD", "hub", "resolve", 302), ("GET", "cdn", "blob", 200)]
    assert fakehub.bytes_served() == f.size
    assert fakehub.requests[1].token is None, "no token on the CDN"


def test_a_cached_file_costs_one_head_and_no_bytes(fakehub, tmp_path):
    first = download(fakehub, tmp_path, TINY_REPO, "tiny-Q8_0.gguf")
    fakehub.reset()
    assert download(fakehub, tmp_path, TINY_REPO, "tiny-Q8_0.gguf") == first
    assert [(r.method, r.route) for r in fakehub.requests] == [("HEAD", "resolve")]
    assert fakehub.bytes_served() == 0


def test_hf_hub_download_resumes_after_a_cut_connection(fakehub, tmp_path):
    f = fakehub.file(GEMMA_REPO, GEMMA_FILE)
    fakehub.drop_once(GEMMA_REPO, GEMMA_FILE)
    path = download(fakehub, tmp_path, GEMMA_REPO, GEMMA_FILE)
    assert sha256(path) == f.sha256
    blobs = [r for r in fakehub.requests if r.route == "blob"]
    assert [(b.status, b.dropped) for b in blobs] == [(200, True), (206, False)]
    # It keeps whole chunks only, so it asks again for the tail of the last one.
    resumed_at = int(blobs[1].range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= f.size // 2 == blobs[0].body_bytes
    assert fakehub.bytes_served() < 1.5 * f.size


def test_split_parts_nested_files_and_plain_git_files(fakehub, tmp_path):
    repo = fakehub.repos[TINY_REPO]
    for name in ["tiny-Q4_K_M-00001-of-00002.gguf", "tiny-Q4_K_M-00002-of-00002.gguf", "extra/tiny-Q6_K.gguf"]:
        path = download(fakehub, tmp_path, TINY_REPO, name)
        assert path == tmp_path / "models--fakehub--tiny-GGUF/snapshots" / repo.commit / name
        assert sha256(path) == repo.file(name).sha256
    fakehub.reset()
    readme = download(fakehub, tmp_path, TINY_REPO, "README.md")
    # A file kept in git (no LFS): resolve answers 200 itself, ETag = git blob id.
    assert os.readlink(readme).endswith(f"blobs/{repo.file('README.md').git_oid}")
    assert [(r.method, r.route, r.status) for r in fakehub.requests] == [("HEAD", "resolve", 200), ("GET", "resolve", 200)]


def test_gated_repo_wants_the_token(fakehub, tmp_path):
    with pytest.raises(GatedRepoError) as e:
        download(fakehub, tmp_path, GATED_REPO, GATED_FILE)
    assert e.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as e:
        download(fakehub, tmp_path, GATED_REPO, GATED_FILE, token="hf_" + "x" * 37)
    assert e.value.response.status_code == 403
    path = download(fakehub, tmp_path, GATED_REPO, GATED_FILE, token=fakehub.token)
    assert sha256(path) == fakehub.file(GATED_REPO, GATED_FILE).sha256
    # The listing stays public, as on the real hub.
    assert [f.path for f in HfApi(endpoint=fakehub.endpoint, token=False).list_repo_tree(GATED_REPO)] == [GATED_FILE]


def test_missing_repo_file_and_revision(fakehub, tmp_path):
    with pytest.raises(RepositoryNotFoundError) as e:
        download(fakehub, tmp_path, "nobody/nothing-GGUF", "x.gguf")
    assert e.value.response.status_code == 401  # the real hub hides private repos from anonymous callers
    with pytest.raises(RepositoryNotFoundError) as e:
        download(fakehub, tmp_path, "nobody/nothing-GGUF", "x.gguf", token=fakehub.token)
    assert e.value.response.status_code == 404
    with pytest.raises(EntryNotFoundError) as e:
        download(fakehub, tmp_path, TINY_REPO, "tiny-Q2_K.gguf")
    assert e.value.response.status_code == 404
    assert e.value.response.headers["X-Repo-Commit"] == fakehub.repos[TINY_REPO].commit
    with pytest.raises(RevisionNotFoundError):
        download(fakehub, tmp_path, TINY_REPO, "tiny-Q8_0.gguf", revision="v9")


def test_a_lying_sha256_is_not_caught_by_huggingface_hub(fakehub, tmp_path):
    """huggingface_hub checks the size only: the blob is named by the sha256
    the hub claims. vram-llm's client must hash what it got."""
    f = fakehub.file(LIAR_REPO, LIAR_FILE)
    path = download(fakehub, tmp_path, LIAR_REPO, LIAR_FILE)
    assert os.readlink(path).endswith(f"blobs/{f.advertised_sha256}")
    assert sha256(path) == f.sha256 != f.advertised_sha256
    tree = HfApi(endpoint=fakehub.endpoint, token=False).list_repo_tree(LIAR_REPO)
    assert [t.lfs.sha256 for t in tree] == [f.advertised_sha256]


def test_hub_down_refuses_connections_and_the_cache_still_answers(fakehub, tmp_path):
    cached = download(fakehub, tmp_path, TINY_REPO, "tiny-Q8_0.gguf")
    fakehub.down()
    with pytest.raises(ConnectionRefusedError):
        request(fakehub.endpoint + "/api/models/fakehub/tiny-GGUF")
    assert download(fakehub, tmp_path, TINY_REPO, "tiny-Q8_0.gguf") == cached
    with pytest.raises(LocalEntryNotFoundError):  # (online, it would retry for ~20 s first)
        download(fakehub, tmp_path, TINY_REPO, "tiny-F16.gguf", local_files_only=True)
    fakehub.up()
    assert download(fakehub, tmp_path, TINY_REPO, "tiny-F16.gguf").exists()


def test_api_shapes_parse_in_huggingface_hub(tmp_path):
    with FakeHub([tiny_repo()], tree_page_size=3) as hub:
        api = HfApi(endpoint=hub.endpoint, token=False)
        repo = hub.repos[TINY_REPO]
        info = api.model_info(TINY_REPO, files_metadata=True)
        assert info.sha == repo.commit and not info.gated
        sizes = {s.rfilename: (s.size, s.lfs.sha256 if s.lfs else None) for s in info.siblings}
        assert sizes["tiny-Q8_0.gguf"] == (80_000, repo.file("tiny-Q8_0.gguf").sha256)
        assert sizes["README.md"][1] is None
        # Three entries a page: the client follows Link rel="next".
        tree = list(api.list_repo_tree(TINY_REPO, recursive=True))
        assert [t.path for t in tree] == ["README.md", "extra", "extra/tiny-Q6_K.gguf", "mmproj-tiny-F16.gguf", "tiny-F16.gguf",
                                          "tiny-Q4_K_M-00001-of-00002.gguf", "tiny-Q4_K_M-00002-of-00002.gguf", "tiny-Q8_0.gguf"]
        assert hub.count(route="tree") == 3
        top = [t.path for t in api.list_repo_tree(TINY_REPO, recursive=False)]
        assert "extra" in top and "extra/tiny-Q6_K.gguf" not in top
        assert [b.target_commit for b in api.list_repo_refs(TINY_REPO).branches] == [repo.commit]
        with pytest.raises(RepositoryNotFoundError):
            api.model_info("nobody/nothing")


def test_ranges_on_the_cdn(fakehub):
    f = fakehub.file(TINY_REPO, "tiny-Q8_0.gguf")
    status, headers, _ = request(fakehub.resolve_url(TINY_REPO, f.path), "HEAD")
    assert status == 302 and headers["X-Linked-Size"] == str(f.size)
    blob = headers["Location"]
    assert blob.startswith(fakehub.cdn_url)
    status, headers, body = request(blob, headers={"Range": "bytes=10-19"})
    assert (status, headers["Content-Range"], body) == (206, f"bytes 10-19/{f.size}", f.data[10:20])
    status, headers, body = request(blob, headers={"Range": "bytes=-5"})
    assert (status, body) == (206, f.data[-5:])
    status, headers, _ = request(blob, headers={"Range": f"bytes={f.size}-"})
    assert (status, headers["Content-Range"]) == (416, f"bytes */{f.size}")
    status, headers, body = request(blob, "HEAD")
    assert (status, headers["Content-Length"], headers["Accept-Ranges"], body) == (200, str(f.size), "bytes", b"")
    assert headers["ETag"].strip('"') != f.sha256, "the CDN's ETag is not the file's hash"


def test_without_ranges_or_redirects(tmp_path):
    """The knobs for clients that must cope: a server ignoring Range, and a
    mirror that serves LFS files from resolve itself."""
    with FakeHub([tiny_repo()], accept_ranges=False, redirect=False) as hub:
        f = hub.file(TINY_REPO, "tiny-F16.gguf")
        status, headers, body = request(hub.resolve_url(TINY_REPO, f.path), headers={"Range": "bytes=0-9"})
        assert (status, headers["Accept-Ranges"], len(body)) == (200, "none", f.size)
        assert headers["X-Linked-Etag"] == f'"{f.sha256}"' and headers["ETag"] == f'"{f.sha256}"'
        path = download(hub, tmp_path, TINY_REPO, f.path)
        assert sha256(path) == f.sha256 and hub.count(route="blob") == 0


def test_a_stalled_body_waits_for_release(fakehub):
    f = fakehub.file(TINY_REPO, "tiny-Q8_0.gguf")
    stalled = fakehub.stall_once(TINY_REPO, f.path, at=30_000)
    blob = request(fakehub.resolve_url(TINY_REPO, f.path), "HEAD")[1]["Location"]
    got = {}
    reader = threading.Thread(target=lambda: got.update(r=request(blob)))
    reader.start()
    assert stalled.wait(30)
    assert fakehub.bytes_served() == 30_000
    fakehub.release()
    reader.join(30)
    assert got["r"][2] == f.data and fakehub.bytes_served() == f.size


def test_environment_variables_drive_huggingface_hub(fakehub, tmp_path):
    """HF_ENDPOINT, HF_HUB_CACHE and HF_TOKEN, as a user would set them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update({"HF_ENDPOINT": fakehub.endpoint, "HF_HUB_CACHE": str(tmp_path), "HF_TOKEN": fakehub.token,
                "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    code = f"import huggingface_hub as h; print(h.hf_hub_download({GATED_REPO!r}, {GATED_FILE!r}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path == tmp_path / "models--fakehub--gated-GGUF/snapshots" / fakehub.repos[GATED_REPO].commit / GATED_FILE
    assert [r.token for r in fakehub.requests if r.route == "resolve"] == [fakehub.token]
