"""`scheda tokens`: seconds from a GGUF's path to its pieces, each way there is, side by side.

Every contender runs in a fresh Python process (its imports count: a command pays them),
in turn, round after round, so a slow spell of the machine falls on all of them alike;
the figures are medians. Each process times itself from having the path to having the
tokens and prints them, and the run checks that every contender got the same ids:

- `llama.cpp engine`: what `scheda tokens` did before, an xllamacpp server started for
  the question (scheda's engine, context 256, no warm-up), then its /tokenize; and the
  same with one thread, what it does now for a tokenizer the vocabulary cannot answer;
- `smallest server`: the same with the least llama.cpp allows (a context of 16, one
  thread, no warm-up, no extra buffer types), to see what a server costs at best;
- `llama-cpp-python`: `Llama(vocab_only=True)`, where the eval extra is installed;
- `vocabulary`: the GGUF's own vocabulary in `tokenizers` (scheda/gguf_tokens.py),
  what `scheda tokens` does now.

Then the whole command, `scheda tokens MODEL TEXT --json`, as a user runs it, and the
share of it spent resolving the model (reading the GGUF's spec). Run it from the project
root:

    python benchmarks/tokens_speed.py [--model default] [--runs 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

TEXT = "ChatGPT è incredibile!"

PRELUDE = """
import json, sys, time
from pathlib import Path
path, text = Path(sys.argv[1]), sys.argv[2]
start = time.perf_counter()
"""
REPORT = """
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "ids": ids}))
"""
CONTENDERS = {
    "llama.cpp engine (before)": """
from scheda.engines import open_model
with open_model(path, "llama.cpp", context=256, warmup=False) as engine:
    ids = [t.id for t in engine.tokenize(text)]
""",
    "llama.cpp engine, one thread (the fallback now)": """
from scheda.tokenization.tokens import llamacpp_tokens
ids = [t.id for t in llamacpp_tokens(path, text)]
""",
    "smallest server": """
import urllib.request
import xllamacpp
params = xllamacpp.CommonParams()
params.model.path = str(path)
params.n_ctx = 16
params.n_batch = params.n_ubatch = 16
params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 1
params.warmup = False
params.fit_params = False
params.no_extra_bufts = True
params.verbosity = -1
params.hostnames = ["127.0.0.1"]
params.port = 0
params.n_threads_http = 1
server = xllamacpp.Server(params)
body = json.dumps({"content": text, "with_pieces": True}).encode()
request = urllib.request.Request(
    str(server.listening_address) + "/tokenize", data=body,
    headers={"Content-Type": "application/json"},
)
with urllib.request.urlopen(request) as answer:
    ids = [t["id"] for t in json.loads(answer.read())["tokens"]]
""",
    "llama-cpp-python vocab_only": """
import llama_cpp
llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
pieces = [llm.detokenize([t]) for t in tokens]
ids = list(tokens)
""",
    "vocabulary (after)": """
from scheda.tokenization.gguf_tokens import vocabulary_tokenizer
ids = [t.id for t in vocabulary_tokenizer(path).tokenize(text)]
""",
}
RESOLVE = """
import json, sys, time
start = time.perf_counter()
from scheda.resolve import resolve
spec = resolve(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start, "path": spec.path}))
"""


def child(code: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def whole_command(model: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "scheda", "tokens", model, TEXT, "--json"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    resolved = child(RESOLVE, args.model)
    path = resolved["path"]
    contenders = dict(CONTENDERS)
    if importlib.util.find_spec("llama_cpp") is None:
        del contenders["llama-cpp-python vocab_only"]
    times: dict[str, list[float]] = {name: [] for name in [*contenders, "whole command"]}
    times["resolving the model"] = []
    ids: dict[str, list[int]] = {}
    for _ in range(args.runs):
        for name, code in contenders.items():
            found = child(PRELUDE + code + REPORT, path, TEXT)
            times[name].append(found["seconds"])
            ids[name] = found["ids"]
        times["whole command"].append(whole_command(args.model))
        times["resolving the model"].append(child(RESOLVE, args.model)["seconds"])
    if len({json.dumps(v) for v in ids.values()}) != 1:
        raise SystemExit(f"the contenders disagree: {ids}")
    load = os.getloadavg()
    print(f"{args.model}: {path}")
    print(f"text {TEXT!r}: {len(next(iter(ids.values())))} tokens, the same from every way")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs")
    print(f"medians of {args.runs} rounds, each a fresh process:\n")
    print("| seconds | median | min | max |\n| --- | --- | --- | --- |")
    for name, values in times.items():
        print(
            f"| {name} | {statistics.median(values):.3f} s | {min(values):.3f} s "
            f"| {max(values):.3f} s |"
        )


if __name__ == "__main__":
    main()
