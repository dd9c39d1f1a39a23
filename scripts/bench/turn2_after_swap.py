#!/usr/bin/env python3
"""Turn 2 of a conversation after its model was swapped out and back, vs turn 1.

Against a server with two models a and b of which one fits (e.g. --max-loaded-models 1):
    .venv/bin/python scripts/bench/turn2_after_swap.py http://127.0.0.1:8080
Standard library only."""
# Turn 2 of a conversation after its model was swapped out and back, vs cold.
import json, time, urllib.request, sys
base = sys.argv[1]
def ttft(model, prompt):
    body = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0}
    t = time.time()
    req = urllib.request.Request(base + "/v1/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    r = json.load(urllib.request.urlopen(req))
    return (time.time() - t) * 1000, r["usage"]["prompt_tokens_details"]["cached_tokens"]
conv = " ".join(f"Turn {i}: the user asks about planet number {i} and its moons." for i in range(45))
ttft("b", "Warm up b.")
cold = ttft("a", conv)                 # a loads (swap b -> a) and prefills cold
ttft("b", "Hello there.")              # swap a -> b
warm = ttft("a", conv + " And the rings?")  # swap b -> a, turn 2
print(f"turn 1 (swap in + cold prefill): {cold[0]:.0f} ms, cached {cold[1]}")
print(f"turn 2 after a swap out and back: {warm[0]:.0f} ms, cached {warm[1]}")
print(f"ratio cold/turn2: {cold[0]/warm[0]:.1f}x")
