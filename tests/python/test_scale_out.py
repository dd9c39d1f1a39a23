"""Scale-out on loopback: three vram-llm nodes and a minimal endpoint picker
driven only by their /metrics, as the Kubernetes inference gateway's picker
is (docs/scale-out.md). Each node registers six models (the test model under
six names) and keeps at most two loaded (--max-loaded-models 2). The same interleaved trace goes through the
picker and through round-robin; the picker must cause fewer swaps. The same
against HAProxy's hashing: test_haproxy.py.
"""

import random

import pytest

from cluster import Nodes, pick, post

MODELS = [f"m{i}" for i in range(6)]
NODES = 3


@pytest.fixture(scope="module")
def nodes():
    nodes = Nodes(NODES, MODELS, max_loaded=2)
    yield nodes
    nodes.stop()


def replay(nodes, trace, route):
    before = nodes.swaps()
    for i, model in enumerate(trace):
        status, body = post(f"{nodes.bases[route(i, model)]}/v1/completions",
                            {"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0})
        assert status == 200, body
    return nodes.swaps() - before


def test_a_metrics_driven_picker_swaps_less_than_round_robin(nodes):
    # Two of the six models per node: all six fit across the three nodes.
    rng = random.Random(3)
    trace = [rng.choice(MODELS) for _ in range(36)]
    picked = replay(nodes, trace, lambda i, model: pick(nodes.bases, model))
    round_robin = replay(nodes, trace, lambda i, model: i % NODES)
    print(f"\nswaps over {len(trace)} requests, {len(MODELS)} models, {NODES} nodes: picker {picked:.0f}, round-robin {round_robin:.0f}")
    assert picked < round_robin
