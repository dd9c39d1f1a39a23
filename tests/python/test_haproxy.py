"""Three vram-llm nodes behind a real HAProxy on loopback, run from
config/haproxy/vram-llm.cfg (docs/scale-out.md). Each node registers the test
model under three names and keeps one loaded (--max-loaded-models 1), so a
request for a model the node does not hold is a swap.

The names alpha, beta and gamma hash to three different nodes under the
file's server ids (asserted below). With few models hashing is lumpy: m0, m1
and m2 would put two models on one node, which then swaps between them; the
residency-aware picker (test_scale_out.py) is what avoids that.

The tests share the nodes and run in file order; the last one kills a node.
"""

import http.client
import json
import random
import signal
import threading

import openai
import pytest

from cluster import MISSING_HAPROXY, NO_EOG, HAProxy, Nodes, haproxy_bin, post, until

MODELS = ["alpha", "beta", "gamma"]


@pytest.fixture(scope="module")
def lb(tmp_path_factory):
    if haproxy_bin() is None:
        pytest.fail(MISSING_HAPROXY)
    nodes = Nodes(3, MODELS, max_loaded=1)
    work = tmp_path_factory.mktemp("haproxy")
    affinity = HAProxy(work, nodes.ports, "affinity")
    round_robin = HAProxy(work, nodes.ports, "roundrobin")
    lb = {"nodes": nodes, "affinity": affinity, "round_robin": round_robin, "work": work}
    # Where the hash sends each model: the node that counts the request.
    lb["owner"] = {m: served_by(nodes, lambda: complete(affinity.base, m)) for m in MODELS}
    yield lb
    affinity.stop()
    round_robin.stop()
    nodes.stop()


def complete(base, model, max_tokens=1):
    status, body = post(f"{base}/v1/completions",
                        {"model": model, "prompt": "Hello", "max_tokens": max_tokens, "temperature": 0, "logit_bias": NO_EOG})
    assert status == 200, body
    return body


def requests_by_node(nodes):
    """Requests each node has answered, per model (a stopped node: {})."""
    return [s["requests"] if s else {} for s in nodes.scrape()]


def served_by(nodes, send):
    """Calls `send()` and returns the one node whose request count grew."""
    before = requests_by_node(nodes)
    send()
    after = requests_by_node(nodes)
    grew = [i for i in range(len(after)) if sum(after[i].values()) > sum(before[i].values())]
    assert len(grew) == 1, f"expected one node to serve the request, got {grew}"
    return grew[0]


def replay(nodes, base, trace):
    """Sends the trace one request at a time (each must answer 200); returns
    the swaps it caused and {model: nodes that served it}."""
    swaps, before = nodes.swaps(), requests_by_node(nodes)
    for model in trace:
        complete(base, model)
    after = requests_by_node(nodes)
    where = {m: {i for i in range(len(after)) if after[i].get(m, 0) > before[i].get(m, 0)} for m in set(trace)}
    return nodes.swaps() - swaps, where


def test_affinity_swaps_far_less_than_round_robin(lb):
    nodes, owner = lb["nodes"], lb["owner"]
    assert sorted(owner.values()) == [0, 1, 2], f"the three models should hash to three nodes: {owner}"
    rng = random.Random(5)
    trace = [rng.choice(MODELS) for _ in range(24)]
    affinity, where = replay(nodes, lb["affinity"].base, trace)
    assert where == {m: {owner[m]} for m in MODELS}, "every request for a model goes to its node"
    round_robin, _ = replay(nodes, lb["round_robin"].base, trace)
    print(f"\nswaps over {len(trace)} requests, 3 models, 3 nodes holding one each: "
          f"HAProxy affinity {affinity:.0f}, HAProxy round robin {round_robin:.0f}")
    assert affinity * 4 <= round_robin and round_robin >= 8


def test_a_stream_passes_through_intact(lb):
    conn = http.client.HTTPConnection("127.0.0.1", lb["affinity"].port, timeout=300)
    body = {"model": MODELS[0], "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0,
            "logit_bias": NO_EOG, "stream": True}
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
    events = [line[len(b"data: "):] for line in resp.read().split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["text"]) >= 20, events
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and text


def test_a_large_body_with_model_last_routes_by_model(lb):
    """A ~300 KB chat body as the OpenAI SDK sends it (`messages`, then
    `model`): HAProxy must buffer it whole to find `model`. The nodes' 256
    tokens of context refuse it (400, from the node, which read it whole);
    what counts is which node that was."""
    nodes = lb["nodes"]
    client = openai.OpenAI(base_url=f"{lb['affinity'].base}/v1", api_key="none", max_retries=0)
    content = "The quick brown fox jumps over the lazy dog. " * 7000

    def send(model):
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(messages=[{"role": "user", "content": content}], model=model, max_tokens=1)
        assert e.value.code == "context_length_exceeded", e.value

    for model in MODELS:
        assert served_by(nodes, lambda: send(model)) == lb["owner"][model], model


def test_the_bounded_load_variant_keeps_affinity_below_its_bound(lb):
    """hash-balance-factor uncommented: one request at a time never passes
    the bound, so every model still goes to its node."""
    nodes = lb["nodes"]
    bounded = HAProxy(lb["work"], nodes.ports, "bounded")
    try:
        for model in MODELS:
            assert served_by(nodes, lambda: complete(bounded.base, model)) == lb["owner"][model], model
    finally:
        bounded.stop()


def test_a_body_over_the_buffer_is_refused_not_misrouted(lb):
    """With HAProxy's default 16 KB buffer the same body would hide `model`
    and go round robin; the file's 413 rule refuses it instead."""
    nodes, work = lb["nodes"], lb["work"]
    small = HAProxy(work, nodes.ports, edit=lambda text: text.replace("    tune.bufsize 1048576\n", ""))
    try:
        body = {"messages": [{"role": "user", "content": "x" * 40000}], "model": MODELS[0]}
        status, answer = post(f"{small.base}/v1/chat/completions", body)
        assert status == 413 and "tune.bufsize" in answer["error"]["message"], answer
    finally:
        small.stop()


def test_a_node_killed_mid_trace_loses_no_request(lb):
    """Runs last: kills a node. A request in flight on it when it dies has
    had no answer byte, so HAProxy replays it on another node (retry-on
    empty-response; only the routes that change nothing). Once its health
    checks fail the node is DOWN: its model moves to one other node and the
    other models stay where they were."""
    nodes, owner, haproxy = lb["nodes"], lb["owner"], lb["affinity"]
    rng = random.Random(11)
    trace = [rng.choice(MODELS) for _ in range(18)]
    replay(nodes, haproxy.base, trace[:9])

    victim = owner[MODELS[0]]
    name = f"node{victim + 1}"
    retried = lambda: int(haproxy.servers()[name]["wretr"] or 0) + int(haproxy.servers()[name]["wredis"] or 0)
    retries_before = retried()
    # Stopped (SIGSTOP), the node's kernel still takes the connection and the
    # request; the request is then in flight there, unanswered, and dies with it.
    nodes.procs[victim].send_signal(signal.SIGSTOP)
    answer = {}
    inflight = threading.Thread(target=lambda: answer.update(complete(haproxy.base, MODELS[0])))
    inflight.start()
    until(lambda: int(haproxy.servers()[name]["scur"]) >= 1, f"a request in flight on {name}")
    nodes.procs[victim].kill()
    nodes.procs[victim].wait(timeout=30)
    inflight.join(timeout=300)
    assert answer.get("choices"), "the request in flight on the killed node was answered by another"
    assert retried() > retries_before, "HAProxy retried it elsewhere"
    until(lambda: haproxy.servers()[name]["status"] == "DOWN", f"HAProxy marks {name} DOWN")

    _, where = replay(nodes, haproxy.base, trace[9:])
    moved = where[MODELS[0]]
    assert len(moved) == 1 and victim not in moved, f"{MODELS[0]} moved to one surviving node: {moved}"
    assert all(where[m] == {owner[m]} for m in MODELS[1:] if m in where), f"the others stayed: {where}"
