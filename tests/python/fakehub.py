"""A fake Hugging Face hub on loopback, for the download tests (issue 25).

The routes llama.cpp's `-hf` and huggingface_hub's `hf_hub_download` call
(docs/hub-protocol.md): model info, tree (LFS sha256 and size), refs,
`resolve` (HEAD, GET) with LFS files redirected (302) to a "CDN" on a second
port as the real hub sends them to another host, Range (206). Faults: a gated
repo (401 without the token), a lying sha256, a connection cut mid-file once,
a body that stalls until released (to kill a client mid-download), the hub
down (connection refused). Counters of requests and bytes served let tests
assert "not downloaded twice" and "resumed, not restarted".

Stdlib only. In tests: `with FakeHub(default_repos()) as hub: hub.endpoint`
(or the `fakehub` fixture of conftest.py). By hand or for benchmarks:
`python tests/python/fakehub.py --port 8090` prints the HF_ENDPOINT to use.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import socket
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

ROOT = Path(__file__).resolve().parents[2]

# What the hub accepts for the gated repo. llama.cpp sends a token on API
# calls only when it looks real: `hf_` then at least 34 letters or digits.
TOKEN = "hf_fakehubGatedRepoAccessToken0123456789"

GEMMA_REPO = "ggml-org/gemma-3-270m-GGUF"
GEMMA_FILE = "gemma-3-270m-Q4_K_M.gguf"
TINY_REPO = "fakehub/tiny-GGUF"
GATED_REPO = "fakehub/gated-GGUF"
GATED_FILE = "gated-Q4_K_M.gguf"
LIAR_REPO = "fakehub/liar-GGUF"
LIAR_FILE = "liar-Q4_K_M.gguf"

CHUNK = 1 << 20
_HASHES: dict[tuple, str] = {}
_HASH_LOCK = threading.Lock()


def file_sha256(path) -> str:
    """The sha256 of a file on disk, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * CHUNK):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    """file_sha256, computed once per process (by size and mtime): for the files served."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key not in _HASHES:
            _HASHES[key] = file_sha256(path)
        return _HASHES[key]


def model_path() -> Path:
    """The test model: VRAM_LLM_TEST_MODEL, else models/ of this checkout."""
    return Path(os.environ.get("VRAM_LLM_TEST_MODEL") or ROOT / "models/gemma-3-270m-q4_k_m.gguf")


@dataclass
class RepoFile:
    """One file of a repository: bytes in memory or a file on disk."""

    path: str
    data: bytes | None = None
    source: Path | None = None
    lfs: bool = True
    lie: bool = False  # advertise (tree, X-Linked-Etag) a sha256 that is not the content's

    def __post_init__(self):
        assert (self.data is None) != (self.source is None), "a RepoFile has data or a source"
        self.size = len(self.data) if self.data is not None else self.source.stat().st_size

    @property
    def sha256(self) -> str:
        """The sha256 of the content served."""
        if self.data is not None:
            return hashlib.sha256(self.data).hexdigest()
        return sha256_file(self.source)

    @property
    def advertised_sha256(self) -> str:
        return hashlib.sha256(b"lie:" + self.sha256.encode()).hexdigest() if self.lie else self.sha256

    def pointer(self) -> bytes:
        """The git-lfs pointer the repository holds in place of an LFS file."""
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.advertised_sha256}\nsize {self.size}\n".encode()

    @property
    def git_oid(self) -> str:
        """The git blob id: of the pointer for an LFS file, else of the content."""
        body = self.pointer() if self.lfs else self.data if self.data is not None else self.source.read_bytes()
        return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()



@dataclass
class Repo:
    repo_id: str
    files: list[RepoFile]
    gated: bool = False
    commit: str = ""

    def __post_init__(self):
        self.commit = self.commit or hashlib.sha1(f"fakehub {self.repo_id}".encode()).hexdigest()

    def file(self, path: str) -> RepoFile | None:
        return next((f for f in self.files if f.path == path), None)


def fake_gguf(name: str, size: int) -> bytes:
    """Deterministic bytes that start like a GGUF file (not loadable)."""
    rng = random.Random(name)
    return b"GGUF\x03\x00\x00\x00" + rng.randbytes(size - 8)


def tiny_repo() -> Repo:
    """A split Q4_K_M, a Q8_0, an F16, a nested Q6_K and an mmproj listed
    first, to exercise llama.cpp's picking rule."""
    names = {"mmproj-tiny-F16.gguf": 40_000, "tiny-F16.gguf": 70_000, "tiny-Q4_K_M-00001-of-00002.gguf": 96_000,
             "tiny-Q4_K_M-00002-of-00002.gguf": 64_000, "tiny-Q8_0.gguf": 80_000, "extra/tiny-Q6_K.gguf": 50_000}
    files = [RepoFile(n, data=fake_gguf(n, s)) for n, s in names.items()]
    files.append(RepoFile("README.md", data=b"# tiny\nA fake split model for the download tests.\n", lfs=False))
    return Repo(TINY_REPO, files)


def default_repos(model: Path | None = None) -> list[Repo]:
    """The test model as ggml-org/gemma-3-270m-GGUF, the tiny split repo, a
    gated repo and a repo whose sha256 lies."""
    model = model or model_path()
    if not model.is_file():
        raise FileNotFoundError(f"the test model {model} is missing: run `scripts/dev setup` or set VRAM_LLM_TEST_MODEL")
    gemma = Repo(GEMMA_REPO, [
        RepoFile(".gitattributes", data=b"*.gguf filter=lfs diff=lfs merge=lfs -text\n", lfs=False),
        RepoFile("README.md", data=b"---\nlicense: gemma\n---\n# gemma-3-270m GGUF (fake hub)\n", lfs=False),
        RepoFile(GEMMA_FILE, source=model),
    ])
    gated = Repo(GATED_REPO, [RepoFile(GATED_FILE, data=fake_gguf(GATED_FILE, 30_000))], gated=True)
    liar = Repo(LIAR_REPO, [RepoFile(LIAR_FILE, data=fake_gguf(LIAR_FILE, 30_000), lie=True)])
    return [gemma, tiny_repo(), gated, liar]


@dataclass
class Request:
    """One request as the hub saw it."""

    server: str  # "hub" or "cdn"
    method: str
    path: str
    route: str  # model_info, tree, refs, resolve, blob, stats, unknown
    repo: str | None = None
    file: str | None = None
    range: str | None = None
    token: str | None = None  # the Bearer token sent, if any
    status: int = 0
    body_bytes: int = 0  # file bytes sent (live)
    dropped: bool = False

    def line(self) -> str:
        return (f"{self.method} {self.server}:{self.route} {self.path} -> {self.status}"
                + (f" (Range {self.range})" if self.range else "") + (" DROPPED" if self.dropped else ""))


class FakeHub:
    """The hub (endpoint) and its CDN (cdn_url) on two loopback ports."""

    def __init__(self, repos: list[Repo] | None = None, *, port: int = 0, cdn_port: int = 0,
                 redirect: bool = True, accept_ranges: bool = True, gate_api: bool = False,
                 tree_page_size: int | None = None, token: str = TOKEN, log=None):
        self.repos = {r.repo_id: r for r in (repos if repos is not None else default_repos())}
        self.redirect = redirect  # LFS files: 302 to the CDN (the real hub) or 200 from resolve (a mirror)
        self.accept_ranges = accept_ranges
        self.gate_api = gate_api  # the gated repo's API routes want the token too (private-like)
        self.tree_page_size = tree_page_size  # paginate tree listings with Link: rel="next"
        self.token = token
        self.log = log
        self._ports = {"hub": port, "cdn": cdn_port}
        self._servers: dict[str, ThreadingHTTPServer] = {}
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._faults: dict[tuple[str, str], tuple[int, str]] = {}  # (repo, file) -> (offset, "drop"/"stall")
        self._conns: set[socket.socket] = set()
        self.stalled = threading.Event()
        self._release = threading.Event()

    def start(self) -> "FakeHub":
        self.up()
        return self

    def up(self):
        """Listen (again, on the same ports after `down`)."""
        for name in ("hub", "cdn"):
            if name in self._servers:
                continue
            server = ThreadingHTTPServer(("127.0.0.1", self._ports[name]), _Handler)
            server.daemon_threads = True
            server.hub, server.name = self, name
            self._ports[name] = server.server_address[1]
            self._servers[name] = server
            threading.Thread(target=server.serve_forever, args=(0.05,), name=f"fakehub-{name}", daemon=True).start()

    def down(self):
        """Stop listening and cut open connections: clients get connection refused."""
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        self._servers.clear()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._release.set()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.down()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._ports['hub']}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._ports['cdn']}"

    def resolve_url(self, repo: str, path: str, rev: str = "main") -> str:
        return f"{self.endpoint}/{repo}/resolve/{rev}/{quote(path)}"

    def file(self, repo: str, path: str) -> RepoFile:
        return self.repos[repo].file(path)

    # faults
    def drop_once(self, repo: str, path: str, at: int | None = None):
        """The next body of `path` that reaches offset `at` (default: half the
        file) is cut there: the connection closes before Content-Length bytes."""
        self._faults[(repo, path)] = (self.file(repo, path).size // 2 if at is None else at, "drop")

    def stall_once(self, repo: str, path: str, at: int | None = None) -> threading.Event:
        """The next body of `path` that reaches `at` stops there until
        `release()` (or `down()`); returns the event set once it stalls."""
        self.stalled.clear()
        self._release.clear()
        self._faults[(repo, path)] = (self.file(repo, path).size // 2 if at is None else at, "stall")
        return self.stalled

    def release(self):
        self._release.set()

    # observation
    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def matching(self, **want) -> list[Request]:
        """The requests whose fields equal `want` (route=, method=, repo=, file=, server=...)."""
        return [r for r in self.requests if all(getattr(r, k) == v for k, v in want.items() if v is not None)]

    def count(self, route=None, method=None, repo=None, file=None) -> int:
        return len(self.matching(route=route, method=method, repo=repo, file=file))

    def bytes_served(self, repo: str | None = None, file: str | None = None) -> int:
        """File bytes sent (resolve and CDN bodies), including cut ones."""
        return sum(r.body_bytes for r in self.matching(repo=repo, file=file))

    def reset(self):
        with self._lock:
            self._requests.clear()

    def routes(self) -> list[str]:
        """`METHOD server:route path -> status [Range]` per request, for logs and reports."""
        return [r.line() for r in self.requests]

    def stats(self) -> dict:
        return {"bytes_served": self.bytes_served(), "requests": [r.__dict__ for r in self.requests]}

    def _record(self, req: Request):
        with self._lock:
            self._requests.append(req)

    def _take_fault(self, repo: str, path: str, start: int, end: int) -> tuple[int, str] | None:
        with self._lock:
            fault = self._faults.get((repo, path))
            return self._faults.pop((repo, path)) if fault and start <= fault[0] < end else None


_API = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(/.*)?|/(refs))?/?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakehub/1"

    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    def setup(self):
        super().setup()
        with self.hub._lock:
            self.hub._conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        with self.hub._lock:
            self.hub._conns.discard(self.connection)

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._dispatch(head=True)

    def do_GET(self):
        self._dispatch(head=False)

    def _dispatch(self, head: bool):
        url = urlsplit(self.path)
        auth = self.headers.get("Authorization", "")
        self.req = Request(self.server.name, self.command, self.path, "unknown", range=self.headers.get("Range"),
                           token=auth[7:] if auth.startswith("Bearer ") else None)
        self.hub._record(self.req)  # seen at once; status and bytes fill in before the client can see them
        try:
            if self.server.name == "cdn":
                self._blob(url, head)
            elif url.path == "/_fakehub/stats":
                self.req.route = "stats"
                self._json(200, self.hub.stats())
            elif m := _API.match(url.path):
                self._api(m, parse_qs(url.query), head)
            elif m := _RESOLVE.match(url.path):
                self._resolve(m.group(1), unquote(m.group(2)), unquote(m.group(3)), head)
            else:
                self._error(404, "Not Found", "Sorry, we can't find the page you are looking for.", api=True)
        except OSError:  # the client went away
            self.close_connection = True
        finally:
            if self.hub.log:
                self.hub.log(f"{self.req.line()} {self.req.body_bytes} bytes")

    # responses
    def _send(self, status: int, headers: dict, body: bytes = b""):
        self.req.status = status
        self.send_response(status)
        headers = {"Content-Length": len(body), **headers}
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None):
        self._send(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, json.dumps(obj).encode())

    def _error(self, status: int, code: str, message: str, api: bool, headers: dict | None = None):
        """API errors are JSON {"error": ...}, resolve errors text; both carry X-Error-Code."""
        h = {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})}
        if api:
            return self._json(status, {"error": message}, h)
        self._send(status, {"Content-Type": "text/plain; charset=utf-8", **h}, message.encode())

    def _repo(self, repo_id: str, api: bool) -> Repo | None:
        """The repository, or None after answering as the hub does: a missing
        repo is 401 to anonymous callers (the hub hides private repos) and 404
        with a valid token; a gated one is 401 without a token and 403 with
        another token."""
        hub, token = self.hub, self.req.token
        self.req.repo = repo_id
        repo = hub.repos.get(repo_id)
        if repo is None:
            self._error(404 if token == hub.token else 401, "RepoNotFound", "Repository not found", api)
            return None
        if repo.gated and (not api or hub.gate_api) and token != hub.token:
            why = ("You must have access to it and be authenticated to access it. Please log in." if token is None
                   else "and you are not in the authorized list.")
            self._error(401 if token is None else 403, "GatedRepo", f"Access to model {repo_id} is restricted. {why}", api)
            return None
        return repo

    def _revision(self, repo: Repo, rev: str, api: bool) -> bool:
        if rev in ("main", repo.commit):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", api)
        return False

    # API
    def _api(self, m: re.Match, query: dict, head: bool):
        repo_id, kind, rev, sub, refs = m.groups()
        self.req.route = "refs" if refs else "tree" if kind == "tree" else "model_info"
        repo = self._repo(repo_id, api=True)
        if repo is None or (rev and not self._revision(repo, unquote(rev), api=True)):
            return
        if refs:
            self._json(200, {"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": repo.commit}],
                             "converts": [], "tags": []})
        elif kind == "tree":
            self._tree(repo, unquote(sub or "/").strip("/"), query)
        else:
            blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
            self._json(200, _model_info(repo, blobs))

    def _tree(self, repo: Repo, sub: str, query: dict):
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = f"{sub}/" if sub else ""
        entries: dict[str, dict] = {}
        for f in repo.files:
            if not f.path.startswith(prefix):
                continue
            rest = f.path[len(prefix):].split("/")
            for depth in range(1, len(rest)):  # the folders on the way
                d = prefix + "/".join(rest[:depth])
                if recursive or depth == 1:
                    entries.setdefault(d, {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d})
            if recursive or len(rest) == 1:
                entries[f.path] = _tree_entry(f)
        if sub and not entries:
            self._error(404, "EntryNotFound", f"{sub} does not exist on \"main\"", api=True)
            return
        items = [entries[k] for k in sorted(entries)]
        headers = {}
        page = self.hub.tree_page_size
        if page:
            start = int(query.get("cursor", ["0"])[0])
            if start + page < len(items):
                nxt = f"{self.hub.endpoint}{urlsplit(self.path).path}?recursive={str(recursive).lower()}&cursor={start + page}"
                headers["Link"] = f'<{nxt}>; rel="next"'
            items = items[start:start + page]
        self._json(200, items, headers)

    # files
    def _resolve(self, repo_id: str, rev: str, path: str, head: bool):
        self.req.route, self.req.file = "resolve", path
        repo = self._repo(repo_id, api=False)
        if repo is None or not self._revision(repo, rev, api=False):
            return
        f = repo.file(path)
        common = {"X-Repo-Commit": repo.commit}
        if f is None:
            self._error(404, "EntryNotFound", "Entry not found", api=False, headers=common)
            return
        if f.lfs:
            common.update({"X-Linked-Etag": f'"{f.advertised_sha256}"', "X-Linked-Size": f.size})
        if f.lfs and self.hub.redirect:
            location = (f"{self.hub.cdn_url}/blobs/{f.sha256}?repo={quote(repo_id, safe='')}&file={quote(path, safe='')}"
                        "&X-Amz-Signature=fakehub")
            body = f"Found. Redirecting to {location}".encode()
            self._send(302, {**common, "Location": location, "Content-Type": "text/plain; charset=utf-8"}, body)
            return
        self._content(repo, f, {**common, "ETag": f'"{f.advertised_sha256 if f.lfs else f.git_oid}"'}, head)

    def _blob(self, url, head: bool):
        """The CDN: signed URLs, no auth; its ETag is not the file's sha256."""
        self.req.route = "blob"
        q = parse_qs(url.query)
        repo = self.hub.repos.get(q.get("repo", [""])[0])
        f = repo.file(q.get("file", [""])[0]) if repo else None
        if f is None or url.path != f"/blobs/{f.sha256}":
            self.req.repo = repo.repo_id if repo else None
            self._send(403, {"Content-Type": "application/xml"}, b"<Error><Code>AccessDenied</Code></Error>")
            return
        self.req.repo, self.req.file = repo.repo_id, f.path
        name = f.path.rsplit("/", 1)[-1]
        headers = {"ETag": f'"{hashlib.md5(f.sha256.encode()).hexdigest()}"',
                   "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\""}
        self._content(repo, f, headers, head)

    def _content(self, repo: Repo, f: RepoFile, headers: dict, head: bool):
        """200 or 206 (Range bytes=a-b, a-, -n), 416 past the end."""
        size, start, end, status = f.size, 0, f.size, 200
        headers = {**headers, "Content-Type": "application/octet-stream",
                   "Accept-Ranges": "bytes" if self.hub.accept_ranges else "none"}
        m = _RANGE.match(self.req.range or "") if self.hub.accept_ranges else None
        if m and (m.group(1) or m.group(2)):
            a, b = m.groups()
            if a:
                start, end = int(a), min(int(b) + 1, size) if b else size
            else:
                start, end = max(size - int(b), 0), size
            if start >= size or start >= end:
                self._send(416, {**headers, "Content-Range": f"bytes */{size}"})
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = end - start
        self._send(status, headers)
        if not head:
            self._body(repo, f, start, end)

    def _body(self, repo: Repo, f: RepoFile, start: int, end: int):
        fault_at, fault = self.hub._take_fault(repo.repo_id, f.path, start, end) or (end, None)
        sock = self.connection
        pos = start
        src = open(f.source, "rb") if f.source is not None else None
        try:
            while pos < end:
                if pos == fault_at and fault == "drop":
                    self.req.dropped = True
                    self.close_connection = True
                    sock.shutdown(socket.SHUT_RDWR)
                    return
                if pos == fault_at and fault == "stall":
                    self.hub.stalled.set()
                    self.hub._release.wait(300)
                    fault_at = end
                n = min(CHUNK * 8, (fault_at if pos < fault_at else end) - pos)
                # Counted before it goes out, so a client never holds bytes the counter lacks.
                self.req.body_bytes += n
                if src is not None:
                    sent = os.sendfile(sock.fileno(), src.fileno(), pos, n)
                    self.req.body_bytes -= n - sent
                    if sent == 0:
                        raise BrokenPipeError
                else:
                    sock.sendall(memoryview(f.data)[pos:pos + n])
                    sent = n
                pos += sent
        finally:
            if src is not None:
                src.close()


def _tree_entry(f: RepoFile) -> dict:
    entry = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path}
    if f.lfs:
        entry["lfs"] = {"oid": f.advertised_sha256, "size": f.size, "pointerSize": len(f.pointer())}
    return entry


def _model_info(repo: Repo, blobs: bool) -> dict:
    siblings = []
    for f in repo.files:
        s = {"rfilename": f.path}
        if blobs:
            s.update({"blobId": f.git_oid, "size": f.size})
            if f.lfs:
                s["lfs"] = {"sha256": f.advertised_sha256, "size": f.size, "pointerSize": len(f.pointer())}
        siblings.append(s)
    when = "2025-01-01T00:00:00.000Z"
    return {"_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id, "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0], "sha": repo.commit, "lastModified": when, "createdAt": when,
            "private": False, "disabled": False, "gated": "manual" if repo.gated else False, "downloads": 0, "likes": 0,
            "library_name": "gguf", "tags": ["gguf"], "siblings": siblings, "usedStorage": sum(f.size for f in repo.files)}


def main(argv=None):
    ap = argparse.ArgumentParser(description="A fake Hugging Face hub on loopback (tests/python/fakehub.py)")
    ap.add_argument("--port", type=int, default=0, help="hub port (0: any free one)")
    ap.add_argument("--cdn-port", type=int, default=0, help="port of the CDN that LFS files redirect to")
    ap.add_argument("--model", type=Path, default=None, help="the GGUF served as " + f"{GEMMA_REPO}/{GEMMA_FILE}")
    ap.add_argument("--no-redirect", action="store_true", help="serve LFS files from resolve (200) instead of a 302 to the CDN")
    ap.add_argument("--drop-once", metavar="REPO:FILE[@BYTES]", action="append", default=[],
                    help="cut the first download of FILE at BYTES (default half)")
    ap.add_argument("--quiet", action="store_true", help="do not log each request on stderr")
    args = ap.parse_args(argv)
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    hub = FakeHub(default_repos(args.model), port=args.port, cdn_port=args.cdn_port, redirect=not args.no_redirect, log=log)
    for spec in args.drop_once:
        target, _, at = spec.partition("@")
        repo, _, path = target.partition(":")
        hub.drop_once(repo, path, int(at) if at else None)
    hub.start()
    lines = [f"HF_ENDPOINT={hub.endpoint}", f"# CDN {hub.cdn_url}; HF_TOKEN={hub.token} opens {GATED_REPO}; "
             f"stats: {hub.endpoint}/_fakehub/stats"]
    lines += [f"# {r.repo_id} {f.path} {f.size} bytes sha256 {f.advertised_sha256}" + (" (lies)" if f.lie else "")
              for r in hub.repos.values() for f in r.files]
    print("\n".join(lines), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        hub.down()


if __name__ == "__main__":
    main()
