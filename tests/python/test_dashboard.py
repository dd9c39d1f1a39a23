"""The dashboard at `/`, rendered by headless Chromium (Debian's `chromium`,
installed by `scripts/dev`): it lists the registered models with their state,
follows a load and an unload, shows the swaps, and a screenshot is saved
(VRAM_LLM_SCREENSHOT, else a temporary file; docs/dashboard.png is one).

Chromium runs each page with a virtual-time budget: the page's polls run and
the DOM is dumped once the budget is spent, with fetches waited for rather
than timed, so the outcome does not depend on how fast this machine is."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request

import pytest
from conftest import launch, stop

ADMIN = "dash-admin"
API_KEY = "dash-key"


def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("chromium is not installed (scripts/dev setup installs Debian's chromium package)")
    return path


def _post(base, path, body, admin=False):
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    if admin:
        headers["X-Admin-Token"] = ADMIN
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def dash():
    model = os.environ["VRAM_LLM_TEST_MODEL"]
    # Two names for the test model, memory for one of them: requests swap.
    proc, base = launch(["--model", f"alpha={model}", "--model", f"beta={model}", "--ctx-size", "512",
                         "--parallel", "1", "--max-loaded-models", "1", "--admin-token", ADMIN, "--api-key", API_KEY])
    yield base
    stop(proc)


def _render(base, *extra):
    """The page's DOM after its polls ran (and any extra Chromium flags)."""
    url = f"{base}/?api_key={API_KEY}&admin_token={ADMIN}"
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000", *extra, url],
            capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _states(dom):
    return dict(re.findall(r'<tr data-model="([^"]+)" data-state="([^"]+)"', dom))


def test_the_page_is_served_with_a_strict_content_security_policy(dash):
    with urllib.request.urlopen(dash + "/", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/html")
        csp = r.headers["Content-Security-Policy"]
        body = r.read().decode()
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    # Everything is in the page: no script, style or font from elsewhere.
    assert not re.search(r'(src|href)="https?://', body)


def test_dashboard_renders_models_and_follows_load_and_unload(dash):
    states = _states(_render(dash, "--dump-dom"))
    assert set(states) == {"alpha", "beta"}, states
    _post(dash, "/admin/models/load", {"model": "beta"}, admin=True)
    states = _states(_render(dash, "--dump-dom"))
    assert states["beta"] == "loaded", states
    assert states["alpha"] != "loaded", states  # one fits
    _post(dash, "/admin/models/unload", {"model": "beta"}, admin=True)
    assert _states(_render(dash, "--dump-dom"))["beta"] == "unloaded"


def test_dashboard_shows_swaps_and_saves_a_screenshot(dash):
    for name in ("alpha", "beta", "alpha"):
        _post(dash, "/v1/completions", {"model": name, "prompt": "Once upon a time", "max_tokens": 16})
    dom = _render(dash, "--dump-dom")
    recent = re.search(r'<tbody id="recent">(.*?)</tbody>', dom, re.S).group(1)
    assert recent.count("<tr>") >= 2, recent
    assert "alpha" in recent and "beta" in recent
    # beta was evicted for alpha: it sleeps (a CPU model keeps its mapped file, nothing pinned).
    assert _states(dom)["beta"] == "sleeping", _states(dom)
    assert "asleep (mapped file)" in dom
    path = os.environ.get("VRAM_LLM_SCREENSHOT") or os.path.join(tempfile.mkdtemp(), "dashboard.png")
    _render(dash, "--window-size=1280,820", f"--screenshot={path}")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
