"""A `[[models]] hf = "owner/repo:QUANT"` model the cache lacks downloads on
its first request (issue 25), from the fake hub (fakehub.py): nothing at
startup, one download for every waiter, a client that leaves cancels
nothing, other models keep serving, the state shows in /v1/models and
/metrics, and the file lands in the shared cache."""

import json
import os
import socket
import threading
import urllib.error
import urllib.request

from conftest import launch, stop
from fakehub import GEMMA_FILE, GEMMA_REPO
from test_hub_download import check_cached, hub_env


def get(base, path):
    with urllib.request.urlopen(f"{base}{path}", timeout=60) as r:
        return r.read().decode()


def model(base, name):
    return next(m for m in json.loads(get(base, "/v1/models"))["data"] if m["id"] == name)


def call(base, method, path, body=None):
    """(status, JSON body) of one request; an error status is an answer too."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{base}{path}", data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def complete(base, name):
    return call(base, "POST", "/v1/completions", {"model": name, "prompt": "Hello", "max_tokens": 3})


def delete(base, query):
    return call(base, "DELETE", f"/models?{query}")


def post(base, path, body):
    return call(base, "POST", path, body)


def test_a_config_model_downloads_on_its_first_request(fakehub, tmp_path):
    cache = tmp_path / "cache"
    config = tmp_path / "models.toml"
    config.write_text(
        "[server]\nctx_size = 1024\n"
        f'[[models]]\nname = "local"\npath = "{os.environ["VRAM_LLM_TEST_MODEL"]}"\n'
        f'[[models]]\nname = "hubbed"\nhf = "{GEMMA_REPO}:Q4_K_M"\n'
    )
    stalled = fakehub.stall_once(GEMMA_REPO, GEMMA_FILE)
    proc, base = launch(["--config", str(config)], env=hub_env(fakehub, cache))
    try:
        before = model(base, "hubbed")
        assert before["downloaded"] is False and before["state"] == "unloaded", before
        assert fakehub.bytes_served() == 0, "nothing downloads at startup"

        results = []
        waiters = [threading.Thread(target=lambda: results.append(complete(base, "hubbed"))) for _ in range(2)]
        for w in waiters:
            w.start()
        assert stalled.wait(120), "the download never started"
        during = model(base, "hubbed")
        assert during["state"] == "downloading" and during["status"]["value"] == "loading", during
        assert 'vram_llm_model_download_percent{model="hubbed"}' in get(base, "/metrics")
        # A client that leaves mid-download cancels nothing.
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as s:
            body = json.dumps({"model": "hubbed", "prompt": "Hi", "max_tokens": 1})
            s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
        # Other models keep serving meanwhile.
        assert complete(base, "local")[0] == 200

        fakehub.release()
        for w in waiters:
            w.join(300)
        assert [status for status, _ in results] == [200, 200], results
        assert fakehub.bytes_served(GEMMA_REPO, GEMMA_FILE) == fakehub.file(GEMMA_REPO, GEMMA_FILE).size, "one download"
        check_cached(fakehub, cache, GEMMA_REPO, GEMMA_FILE)
        after = model(base, "hubbed")
        assert after["state"] == "loaded" and "downloaded" not in after, after
    finally:
        stop(proc)



def test_delete_removes_a_cached_model_from_the_list_and_the_cache(fakehub, tmp_path):
    """llama-server's router `DELETE /models?model=NAME`."""
    from test_hub_download import pulled

    cache = tmp_path / "cache"
    path = pulled(fakehub, cache, f"{GEMMA_REPO}:Q4_K_M")
    config = tmp_path / "models.toml"
    config.write_text(f'[server]\nctx_size = 1024\n[[models]]\nname = "local"\npath = "{os.environ["VRAM_LLM_TEST_MODEL"]}"\n'
                      f'[[models]]\nname = "{GEMMA_REPO}:Q4_K_M"\nhf = "{GEMMA_REPO}:Q4_K_M"\n')
    proc, base = launch(["--config", str(config)], env=hub_env(fakehub, cache))
    try:
        assert complete(base, f"{GEMMA_REPO}:Q4_K_M")[0] == 200
        status, body = delete(base, "model=local")
        assert status == 400 and "Hugging Face cache" in body["error"]["message"], body
        status, body = delete(base, f"model={GEMMA_REPO}%3AQ4_K_M")
        assert (status, body) == (200, {"success": True})
        ids = [m["id"] for m in json.loads(get(base, "/models"))["data"]]
        assert ids == ["local"], ids
        assert not path.exists() and not path.is_symlink(), "the snapshot link is gone"
        blobs = list((cache / f"models--{GEMMA_REPO.replace('/', '--')}" / "blobs").iterdir())
        assert blobs == [], blobs
        try:
            get(base, f"/v1/models/{GEMMA_REPO}:Q4_K_M")
            raise AssertionError("the deleted model is still found")
        except urllib.error.HTTPError as e:
            assert e.code == 404
    finally:
        stop(proc)


def test_a_config_url_downloads_on_its_first_request(fakehub, tmp_path):
    url = f"{fakehub.endpoint}/{GEMMA_REPO}/resolve/main/{GEMMA_FILE}"
    config = tmp_path / "models.toml"
    config.write_text(f'[server]\nctx_size = 1024\n[[models]]\nname = "web"\nurl = "{url}"\n'
                      f'[[models]]\nname = "local"\npath = "{os.environ["VRAM_LLM_TEST_MODEL"]}"\n')
    proc, base = launch(["--config", str(config)], env=hub_env(fakehub, tmp_path / "cache"))
    try:
        assert model(base, "web")["downloaded"] is False and fakehub.bytes_served() == 0
        assert complete(base, "web")[0] == 200
        assert fakehub.bytes_served(GEMMA_REPO, GEMMA_FILE) == fakehub.file(GEMMA_REPO, GEMMA_FILE).size
        assert list((tmp_path / "cache" / "urls").iterdir())[0].name.endswith(GEMMA_FILE)
    finally:
        stop(proc)



def test_post_models_downloads_a_new_model_and_models_sse_tells_its_progress(fakehub, tmp_path):
    """llama-server's router: POST /models {"model"} downloads (added to the list
    first), GET /models/sse streams status_change, download_progress,
    download_finished and model_remove."""
    name = f"{GEMMA_REPO}:Q4_K_M"
    config = tmp_path / "models.toml"
    config.write_text(f'[server]\nctx_size = 1024\n[[models]]\nname = "local"\npath = "{os.environ["VRAM_LLM_TEST_MODEL"]}"\n')
    proc, base = launch(["--config", str(config)], env=hub_env(fakehub, tmp_path / "cache"))
    events, subscribed = [], threading.Event()

    def listen():
        with urllib.request.urlopen(f"{base}/models/sse", timeout=300) as r:
            subscribed.set()
            for line in r:
                if line.startswith(b"data: "):
                    events.append(json.loads(line[6:]))
                    if events[-1]["event"] == "model_remove":
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        assert subscribed.wait(60)
        status, body = post(base, "/models", {"model": "not a repo"})
        assert status == 400 and body["error"]["param"] == "model", body
        assert post(base, "/models", {"model": name}) == (200, {"success": True})
        downloaded = lambda: any(e["event"] == "download_finished" and e["model"] == name for e in events)
        deadline = threading.Event()
        for _ in range(600):
            if downloaded():
                break
            deadline.wait(0.1)
        assert downloaded(), events
        assert any(e["event"] == "download_progress" and e["model"] == name for e in events), events
        assert model(base, name)["state"] == "unloaded", "downloaded, not loaded"
        assert complete(base, name)[0] == 200
        assert delete(base, f"model={GEMMA_REPO}%3AQ4_K_M") == (200, {"success": True})
        listener.join(60)
        assert events[-1] == {"model": name, "event": "model_remove"}, events[-3:]
    finally:
        stop(proc)
