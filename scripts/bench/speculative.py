#!/usr/bin/env python3
"""Speculative decoding, ours next to llama-server's (issue 26).

Two prompts on the test model, one slot, the same threads, greedy, 160
tokens with end-of-generation biased away, streamed:

  copy   a document, then "Repeat the text exactly." (twice, so the base
         model copies): the answer repeats its context
  story  "Once upon a time, a young fox ...": an ordinary continuation

Servers, all started first and measured in turn, round after round (one
request at a time: never two on the CPU together), so that the machine's
drift falls on all alike: vram-llm without
speculation, with `--spec-type ngram-simple` and with the test model as its
own draft model (`--model-draft`, the draft-model path's mechanics and cost:
on a CPU a draft as big as the model cannot pay), llama-server without,
with each n-gram `--spec-type` it has and with the same draft model. Decode speed is the client's
(tokens after the first) / (time after the first token), median of the
rounds. Printed: tokens/s, drafted/accepted (the servers' timings), whether
the text equals the plain run of the same server, and the ratios (against
llama-server's fastest type among those that keep its text, and whether the
two servers' plain texts are the same: where they are not, the ratio
compares different texts).

    .venv/bin/python scripts/bench/speculative.py [--rounds 3] [--threads 2] [--no-peer]
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
import bench_lib  # noqa: E402

MAX_TOKENS = 160
PEER_TYPES = ["ngram-simple", "ngram-map-k", "ngram-mod", "ngram-cache"]


def prompts():
    doc = bench_lib.document("spec-copy", 8)
    copy = f"Text: {doc}\nRepeat the text exactly.\nText: {doc}\nRepeat the text exactly.\nText:"
    # An opening both servers continue with the same greedy text (with
    # "Once upon a time, in a small village between the mountains and the
    # sea, there lived" the two llama.cpp builds round a near tie apart after
    # 245 characters, and llama-server's text falls into an exact loop).
    story = "Once upon a time, a young fox lived in a forest near a river. Every day, the fox"
    return {"copy": copy, "story": story}


def ours_argv(binary, model, threads):
    """A vram-llm server of one slot, `threads` threads, 4096 tokens of context."""
    return [binary, "serve", "--model", model, "--threads", str(threads), "--parallel", "1", "--ctx-size", "4096"]


def peer_argv(peer, model, threads):
    """llama-server, the same shape."""
    t = str(threads)
    return [peer, "-m", model, "-t", t, "-tb", t, "-np", "1", "-c", "4096", "--no-webui"]


def servers(args):
    t = str(args.threads)
    ours = ours_argv(args.ours, args.model, args.threads)
    peer = peer_argv(args.peer, args.model, args.threads)
    out = [("vram-llm", "plain", ours), ("vram-llm", "ngram-simple", ours + ["--spec-type", "ngram-simple"] + args.ours_spec)]
    out.append(("vram-llm", "draft", ours + ["--model-draft", args.model]))
    if args.no_peer:
        return out
    out.append(("llama-server", "plain", peer))
    for kind in PEER_TYPES:
        out.append(("llama-server", kind, peer + ["--spec-type", kind]))
    out.append(("llama-server", "draft", peer + ["--spec-type", "draft-simple", "--model-draft", args.model, "-td", t, "-tbd", t]))
    return out


def once(url, prompt):
    """One greedy completion: its decode speed and text."""
    r = bench_lib.complete(url, prompt, MAX_TOKENS, extra={"cache_prompt": False})
    return (r["tokens"] - 1) / max(r["end"] - r["first"], 1e-9), r["text"]


def counts(url, prompt):
    """Drafted / accepted from the timings of one more run on llama-server's
    /completion (OpenAI's /v1/completions carries none here)."""
    body = {"prompt": prompt, "n_predict": MAX_TOKENS, "temperature": 0, "logit_bias": bench_lib.NO_EOG, "cache_prompt": False}
    timings = bench_lib.post_json(url, "/completion", body)[1].get("timings") or {}
    return timings.get("draft_n", 0), timings.get("draft_n_accepted", 0)


def in_turns(runs, rounds, after=None):
    """Starts every server of `runs` ((key, label, argv, log name) each, as
    `bench_lib.start` takes them) and lets it wait idle, warms each on both
    prompts, then measures them in turn, one request at a time, round after
    round, so that the machine's drift over the minutes of a run falls on all
    of them alike. Returns, by (key, prompt name), the speeds (tokens/s, one
    per round) and the last text, and what `after(url, prompt)` gave for
    each before its server stopped."""
    started, speeds, texts, extra = [], {}, {}, {}
    try:
        for key, label, argv, log in runs:
            server = bench_lib.start(label, argv, log)
            started.append((key, server))
            server.wait_first_token()
            for prompt in prompts().values():
                bench_lib.complete(server.url, prompt, 8)  # warm
        for _ in range(rounds):
            for key, server in started:
                for name, prompt in prompts().items():
                    tps, texts[(key, name)] = once(server.url, prompt)
                    speeds.setdefault((key, name), []).append(tps)
        if after:
            for key, server in started:
                for name, prompt in prompts().items():
                    extra[(key, name)] = after(server.url, prompt)
    finally:
        for _, server in started:
            server.stop()
    return speeds, texts, extra


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_lib.side_by_side_args(ap, rounds=3)
    ap.add_argument("--ours-spec", nargs="*", default=[], help="more vram-llm flags for its speculative run")
    ap.add_argument("--no-peer", action="store_true", help="vram-llm's runs only (no llama-server)")
    args = ap.parse_args()
    runs = [((label, kind), label, argv, f"spec-{kind}") for label, kind, argv in servers(args)]
    speeds, texts, drafts = in_turns(runs, args.rounds, after=counts)
    results = {}
    for (label, kind), name in speeds:
        drafted, accepted = drafts[((label, kind), name)]
        results[(label, kind, name)] = {"tps": statistics.median(speeds[((label, kind), name)]), "text": texts[((label, kind), name)],
                                        "drafted": drafted, "accepted": accepted}
    print(f"{'server':13} {'spec-type':13} {'prompt':6} {'tok/s':>7} {'drafted':>8} {'accepted':>9}  same text as plain")
    for (label, kind, name), r in results.items():
        same = r["text"] == results[(label, "plain", name)]["text"]
        print(f"{label:13} {kind:13} {name:6} {r['tps']:7.1f} {r['drafted']:8} {r['accepted']:9}  {same}")
    print()
    for name in prompts():
        ours_plain = results[("vram-llm", "plain", name)]["tps"]
        ours_spec = results[("vram-llm", "ngram-simple", name)]["tps"]
        ours_draft = results[("vram-llm", "draft", name)]["tps"]
        line = f"{name}: vram-llm draft model / vram-llm plain = {ours_draft / ours_plain:.2f}x"
        if args.no_peer:
            print(f"{name}: vram-llm ngram-simple / vram-llm plain = {ours_spec / ours_plain:.2f}x; {line}")
            continue
        peer_draft = results[("llama-server", "draft", name)]["tps"]
        print(f"{line}; vram-llm draft / llama-server draft = {ours_draft / peer_draft:.2f}x")
        # A type that changes llama-server's own text is not a fair best.
        keeps = [k for k in PEER_TYPES if results[("llama-server", k, name)]["text"] == results[("llama-server", "plain", name)]["text"]]
        peer_best = max(keeps or PEER_TYPES, key=lambda k: results[("llama-server", k, name)]["tps"])
        same = results[("vram-llm", "plain", name)]["text"] == results[("llama-server", "plain", name)]["text"]
        peer_tps = results[("llama-server", peer_best, name)]["tps"]
        print(f"{name}: vram-llm ngram-simple / vram-llm plain = {ours_spec / ours_plain:.2f}x; "
              f"vram-llm ngram-simple / llama-server {peer_best} (its best) = {ours_spec / peer_tps:.2f}x; "
              f"llama-server plain {results[('llama-server', 'plain', name)]['tps']:.1f} tok/s; "
              f"the two servers' plain texts {'are the same' if same else 'DIFFER (the builds round a near tie apart): the ratio compares different texts'}")


if __name__ == "__main__":
    main()
