"""Helpers for side_by_side.py: HTTP completions (streamed and not), server
processes, prompt text, and the page cache. Standard library only."""

import ctypes
import ctypes.util
import http.client
import json
import mmap
import os
import random
import socket
import subprocess
import threading
import time
import urllib.parse

# Gemma 3: token 1 is <eos>, 106 <end_of_turn>. Biased away so every request
# generates exactly max_tokens tokens.
NO_EOG = {"1": -100, "106": -100}


class HttpError(RuntimeError):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body[:500]!r}")
        self.status = status
        self.body = body


PEER = os.path.expanduser("~/.cache/vram-llm/llama-server-11434.0.0/bin/llama-server")


def side_by_side_args(ap, rounds):
    """The arguments every side-by-side script takes: the two binaries, the
    model, threads and rounds."""
    ap.add_argument("--ours", default="target/release/vram-llm")
    ap.add_argument("--peer", default=PEER)
    ap.add_argument("--model", default="models/gemma-3-270m-q4_k_m.gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=rounds)


def server_pair(args, parallel, ctx_per_slot, peer_ctx=None):
    """vram-llm and llama-server on the same model, threads and slots:
    (label, argv) each, without their port (see `start`)."""
    t = str(args.threads)
    return [
        ("vram-llm", [args.ours, "serve", "--model", args.model, "--threads", t, "--parallel", str(parallel),
                      "--ctx-size", str(ctx_per_slot * parallel)]),
        ("llama-server", [args.peer, "-m", args.model, "-t", t, "-tb", t, "-np", str(parallel),
                          "-c", str(peer_ctx or ctx_per_slot * parallel), "--no-webui"]),
    ]


def start(label, argv, log_name):
    """Starts one of `server_pair`'s servers on a free port, its log in /tmp."""
    port = free_port()
    argv = argv + (["--port", str(port)] if label == "vram-llm" else ["--port", str(port), "--host", "127.0.0.1"])
    return Server(label, argv, port, f"/tmp/{log_name}-{label}.log").start()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conn(url, timeout):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)


def get_json(url, path, headers=None, timeout=30):
    conn = _conn(url, timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise HttpError(resp.status, body)
        return json.loads(body)
    finally:
        conn.close()


def post_json(url, path, body, timeout=600):
    """One non-streamed JSON POST: (seconds it took, the decoded answer);
    HttpError unless 200."""
    conn = _conn(url, timeout)
    try:
        start = time.perf_counter()
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        took = time.perf_counter() - start
    finally:
        conn.close()
    if resp.status != 200:
        raise HttpError(resp.status, data)
    return took, json.loads(data)


def _sse_events(resp):
    """Yields the payload of each `data:` line of a server-sent-event stream."""
    buf = b""
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        buf += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    yield line[5:].strip()
    for line in buf.split(b"\n"):
        if line.startswith(b"data:"):
            yield line[5:].strip()


def complete(url, prompt, max_tokens, model=None, stream=True, timeout=600, extra=None):
    """One /v1/completions request at temperature 0 with EOG biased away.

    Returns start/first/end (perf_counter seconds), tokens generated, the
    usage and (llama-server) timings objects when the server sent them.
    `first` is when the first chunk carrying text arrived (streamed), or the
    end of the response (not streamed)."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "logit_bias": NO_EOG, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if model is not None:
        body["model"] = model
    if extra:
        body.update(extra)
    conn = _conn(url, timeout)
    try:
        start = time.perf_counter()
        conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise HttpError(resp.status, resp.read())
        first = None
        first_any = None
        chunks = 0
        usage = timings = None
        text = []
        if stream:
            for data in _sse_events(resp):
                if data == b"[DONE]":
                    continue
                msg = json.loads(data)
                if "error" in msg:
                    raise HttpError(200, data)
                usage = msg.get("usage") or usage
                timings = msg.get("timings") or timings
                for choice in msg.get("choices") or []:
                    if first_any is None:
                        first_any = time.perf_counter()
                    piece = choice.get("text") or ""
                    if piece:
                        chunks += 1
                        text.append(piece)
                        if first is None:
                            first = time.perf_counter()
        else:
            msg = json.loads(resp.read())
            usage = msg.get("usage")
            timings = msg.get("timings")
            text.append(msg["choices"][0].get("text") or "")
        end = time.perf_counter()
    finally:
        conn.close()
    tokens = (usage or {}).get("completion_tokens")
    if tokens is None:
        tokens = chunks if stream else max_tokens
    return {"start": start, "first": first or first_any or end, "end": end, "tokens": tokens,
            "prompt_tokens": (usage or {}).get("prompt_tokens"), "usage": usage, "timings": timings,
            "text": "".join(text)}


def concurrent(url, prompts, max_tokens, model=None):
    """All prompts at once, one streamed request each; aggregate decode rate."""
    out = [None] * len(prompts)
    errors = []
    gate = threading.Barrier(len(prompts))

    def worker(i):
        try:
            gate.wait()
            out[i] = complete(url, prompts[i], max_tokens, model=model)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    wall = max(r["end"] for r in out) - min(r["start"] for r in out)
    total = sum(r["tokens"] for r in out)
    per_stream = [(r["tokens"] - 1) / (r["end"] - r["first"]) for r in out if r["end"] > r["first"]]
    return {"streams": len(prompts), "tokens": total, "wall_s": wall, "aggregate_tps": total / wall,
            "per_stream_tps": sum(per_stream) / max(1, len(per_stream)),
            "ttft_ms": 1000 * sum(r["first"] - r["start"] for r in out) / len(out),
            "tokens_each": sorted({r["tokens"] for r in out})}


class Server:
    """A server process on its own port; output goes to a log file."""

    def __init__(self, label, argv, port, log_path, env=None):
        self.label, self.argv, self.port, self.log_path, self.env = label, argv, port, log_path, env
        self.url = f"http://127.0.0.1:{port}"
        self.proc = None
        self.spawned_at = None

    def start(self):
        self.log = open(self.log_path, "wb")
        self.log.write(("$ " + " ".join(self.argv) + "\n").encode())
        self.log.flush()
        self.spawned_at = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=self.env)
        return self

    def check_alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.label} exited with status {self.proc.returncode}")

    def wait_first_token(self, model=None, timeout=180):
        """Polls a 1-token completion until it succeeds; seconds since spawn."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                r = complete(self.url, "Hello", 1, model=model, stream=False, timeout=timeout)
                return r["end"] - self.spawned_at
            except (OSError, HttpError, http.client.HTTPException) as e:
                last = e
                time.sleep(0.05)
        raise RuntimeError(f"{self.label}: no first token within {timeout}s (last error: {last})")

    def wait_http(self, path, timeout=120):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                return get_json(self.url, path)
            except (OSError, HttpError, http.client.HTTPException, ValueError) as e:
                last = e
                time.sleep(0.05)
        raise RuntimeError(f"{self.label}: {path} did not answer within {timeout}s (last error: {last})")

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=30)
        self.log.close()
        self.proc = None

    def tail(self, lines=40):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError as e:
            return f"(no log: {e})"

    def grep_log(self, needle):
        try:
            with open(self.log_path, "rb") as f:
                return [ln.decode(errors="replace") for ln in f.read().splitlines() if needle.encode() in ln]
        except OSError:
            return []


# ---------------------------------------------------------------- prompts

_WORDS = ("amber falcon river quiet mill seven copper lantern harbor meadow stone violet winter orchard "
          "signal cedar marble thunder velvet garden silver island canyon ember forest glacier hollow "
          "jasmine kettle ladder mirror needle ocean pepper quartz ribbon saddle tunnel umbrella valley "
          "walnut yellow zephyr anchor bridge candle dragon engine feather goblet hammer ivory jungle").split()
_VERBS = "counted painted carried watched followed measured gathered described remembered repaired".split()


def sentence(rng, number):
    words = rng.sample(_WORDS, 6)
    return (f"Sentence {number}: the {words[0]} {words[1]} {rng.choice(_VERBS)} {rng.randint(2, 99)} "
            f"{words[2]} {words[3]} near the {words[4]} {words[5]}.")


def sentences(seed, count, first_number=1):
    rng = random.Random(seed)
    return [sentence(rng, first_number + i) for i in range(count)]


def document(seed, count, title=None):
    """A prompt of numbered sentences; ~20 Gemma tokens per sentence."""
    head = f"Document {title or seed}. Read the numbered sentences below.\n"
    return head + "\n".join(sentences(seed, count))


# ---------------------------------------------------------------- page cache

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_MAP_FAILED = ctypes.c_void_p(-1).value


def resident_fraction(path):
    """Share of the file's pages in the page cache (mincore(2) on a fresh,
    never-touched mapping, so measuring does not read the file)."""
    size = os.path.getsize(path)
    if size == 0:
        return 1.0
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    with open(path, "rb") as f:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
        if addr in (None, _MAP_FAILED):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            return sum(v & 1 for v in vec) / pages
        finally:
            _libc.munmap(addr, size)


def evict(path):
    """Asks the kernel to drop the file's clean pages from the page cache.
    Pages another process has mapped stay (see resident_fraction)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())  # a fresh copy's dirty pages would not be dropped
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def read_whole(path):
    """Reads the file through; returns MB/s."""
    t0 = time.perf_counter()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(8 << 20)
            if not b:
                break
            n += len(b)
    return n / 1e6 / (time.perf_counter() - t0)
