"""After a long few-shot prefix: what k sequences decoded at once give, per attention layout.

    .venv/bin/python benchmarks/shared_prefix_decoding.py [--task gsm8k] [--slots 1,8,16]
        [--steps 64] [--rounds 2] [--data DIR] [--model default]
        [--out docs/shared_prefix_decoding.json]

The spec sheet's generated tasks (GSM8K 8-shot, BBH 3-shot chain of thought) put every
question after the same long few-shot prefix, and `scheda eval` answers them on llama.cpp's
parallel slots (benchmarks/eval_batching.py). This measures, on the embedded model with
llama.cpp's own batch API (llama-cpp-python's bindings, greedy argmax, nothing else in the
way), the decoding rate of k sequences that each hold the task's prefix and one question,
decoded together one token a step, in four attention layouts:

- `separate, flash on`: what llama.cpp's server does: each sequence its own cells (one
  stream per slot), flash attention on (llama.cpp's default where the device has it);
- `separate, flash off`: the same cells, attention as matrix products and a softmax;
- `shared, flash on` / `shared, flash off`: one unified cache where the prefix is one set of
  cells that every sequence's id tags (`llama_memory_seq_cp`), each question after it.

The prefix is decoded once per context and copied to the other sequences (between streams
llama.cpp copies the cells' data; in one unified cache it tags the same cells), so a
measurement costs one prefix. Every round measures every layout at every k, the order turned
each round; the figures are medians over the rounds. Only the decoding steps are timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from scheda.engines import choose
from scheda.evaluation.base import Item, Task
from scheda.evaluation.bbh import BBH
from scheda.evaluation.generated import GeneratedTask
from scheda.evaluation.gsm8k import GSM8K
from scheda.evaluation.runner import make_task
from scheda.evaluation.scorer import common_prefix
from scheda.evaluation.scorer_llamacpp import _silence as silence  # llama.cpp's log, off
from scheda.evaluation.scorer_llamacpp import tokenize
from scheda.formulas.hardware import physical_cores

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
LAYOUTS = {  # name: (flash attention on, one unified cache with the prefix's cells shared)
    "separate, flash on": (True, False),
    "separate, flash off": (False, False),
    "shared, flash on": (True, True),
    "shared, flash off": (False, True),
}
BATCH = 512


class Model:
    """The GGUF loaded once; a context per measurement."""

    def __init__(self, path: Path) -> None:
        import llama_cpp

        self.ll = llama_cpp
        silence(llama_cpp)
        llama_cpp.llama_backend_init()
        self.model = llama_cpp.llama_model_load_from_file(
            str(path).encode(), llama_cpp.llama_model_default_params()
        )
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)

    def tokens(self, text: str) -> list[int]:
        return tokenize(self.ll, self.vocab, text, add_special=True, parse_special=True)


def prompts_of(task: Task, items: list[Item]) -> list[str] | None:
    """The prompts the task's own run hands to the engine for these items."""
    if isinstance(task, GSM8K):
        return [task.prompt(item.data["question"]) for item in items]
    if isinstance(task, BBH):
        return [task.prompt(item.group, item.data["input"]) for item in items]
    if isinstance(task, GeneratedTask):
        return [task.prompt(item) for item in items]
    return None


def rate(
    model: Model, prompts: list[list[int]], prefix: int, flash: bool, shared: bool, steps: int
) -> tuple[float, list[list[int]]]:
    """Tokens per second of `steps` greedy steps of len(prompts) sequences decoded together,
    and each sequence's tokens (the layouts should agree but for near ties)."""
    ll, k = model.ll, len(prompts)
    longest = max(len(p) for p in prompts) + steps
    params = ll.llama_context_default_params()
    # Separate streams split n_ctx between the sequences (plus sequence 0, the prefix's).
    params.n_ctx = prefix + k * (longest - prefix) + 256 if shared else (k + 1) * (longest + 256)
    params.n_batch = params.n_ubatch = BATCH
    params.n_seq_max = k + 1
    params.kv_unified = shared
    params.flash_attn_type = 1 if flash else 0
    params.n_threads = params.n_threads_batch = physical_cores()
    params.no_perf = True
    ctx = ll.llama_init_from_model(model.model, params)
    memory = ll.llama_get_memory(ctx)
    batch = ll.llama_batch_init(BATCH, 0, 1)

    def decode(rows: list[tuple[int, int, int, bool]]) -> None:  # (token, position, seq, logits)
        batch.n_tokens = len(rows)
        for j, (token, pos, seq, logits) in enumerate(rows):
            batch.token[j], batch.pos[j], batch.n_seq_id[j] = token, pos, 1
            batch.seq_id[j][0], batch.logits[j] = seq, logits
        if ll.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    def greedy(row: int) -> int:
        logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, row), shape=(model.n_vocab,))
        return int(np.argmax(logits))

    try:
        head = prompts[0][:prefix]
        for at in range(0, prefix, BATCH):
            decode([(t, at + i, 0, False) for i, t in enumerate(head[at : at + BATCH])])
        last, position = {}, {}
        for seq, prompt in enumerate(prompts, start=1):
            ll.llama_memory_seq_cp(memory, 0, seq, -1, -1)  # sequence 0 is the prefix, whole
            tail = prompt[prefix:]
            for at in range(0, len(tail), BATCH):
                piece = tail[at : at + BATCH]
                end = at + len(piece) == len(tail)
                decode(
                    [
                        (t, prefix + at + i, seq, end and i == len(piece) - 1)
                        for i, t in enumerate(piece)
                    ]
                )
            last[seq], position[seq] = greedy(len(piece) - 1), len(prompt)
        said: dict[int, list[int]] = {s: [t] for s, t in last.items()}
        start = time.perf_counter()
        for _ in range(steps):
            seqs = list(last)
            decode([(last[s], position[s], s, True) for s in seqs])
            for row, s in enumerate(seqs):
                last[s], position[s] = greedy(row), position[s] + 1
                said[s].append(last[s])
        return k * steps / (time.perf_counter() - start), list(said.values())
    finally:
        ll.llama_batch_free(batch)
        ll.llama_free(ctx)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("--task", default="gsm8k")
    cli.add_argument("--slots", default="1,8,16")
    cli.add_argument("--steps", type=int, default=64)
    cli.add_argument("--rounds", type=int, default=2)
    cli.add_argument("--data", type=Path, default=DEFAULT_DATA)
    cli.add_argument("--model", default="default", help="a GGUF (default: the embedded model)")
    cli.add_argument("--out", type=Path, default=ROOT / "docs" / "shared_prefix_decoding.json")
    args = cli.parse_args()
    slots = sorted({int(n) for n in args.slots.split(",")})
    task = make_task(args.task, None, None, args.data)
    _, path = choose(args.model)
    model = Model(path)
    texts = prompts_of(task, task.items()[: max(slots)])
    if texts is None:
        cli.error(f"--task {args.task}: not a task whose answers are generated")
    prompts = [model.tokens(text) for text in texts]
    # The tokens every prompt shares, leaving each question at least one token to decode.
    prefix = min(min(common_prefix(prompts[0], p), len(p) - 1) for p in prompts)
    print(f"{args.task}: a shared prefix of {prefix} tokens", file=sys.stderr)
    rates: dict[str, dict[int, list[float]]] = {name: {k: [] for k in slots} for name in LAYOUTS}
    said: dict[tuple[str, int], list[list[int]]] = {}
    for round_ in range(args.rounds):
        order = list(LAYOUTS) if round_ % 2 == 0 else list(reversed(LAYOUTS))
        for name in order:
            for k in slots if round_ % 2 == 0 else reversed(slots):
                flash, shared = LAYOUTS[name]
                r, said[name, k] = rate(model, prompts[:k], prefix, flash, shared, args.steps)
                rates[name][k].append(r)
                print(f"round {round_ + 1}: {name}, {k} sequences: {r:.1f} tok/s", file=sys.stderr)
    one = statistics.median(rates["separate, flash on"][1]) if 1 in slots else None
    rows = []
    top = max(slots)
    print(
        "| layout | "
        + " | ".join(f"{k} seq., tok/s" for k in slots)
        + f" | best over its own 1 | best over the server's 1 | same tokens, {top} seq. |"
    )
    print("|---|" + "---:|" * (len(slots) + 3))
    for name in LAYOUTS:
        medians = {k: statistics.median(rates[name][k]) for k in slots}
        best = max(medians.values()) / one if one else None
        own = max(medians.values()) / medians[1] if 1 in slots else None
        # Each sequence's tokens against llama.cpp's server layout at the same k.
        same = sum(
            a == b for a, b in zip(said[name, top], said["separate, flash on", top], strict=True)
        )
        rows.append(
            {
                "layout": name,
                "tokens_per_s": medians,
                "runs": rates[name],
                "best_over_one": best,
                "best_over_own_one": own,
                "same_tokens": same,
            }
        )
        cells = " | ".join(f"{medians[k]:.1f}" for k in slots)
        shown = " | ".join(f"{x:.2f}x" if x else "" for x in (own, best))
        print(f"| {name} | {cells} | {shown} | {same}/{top} |")
    machine = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "llama_cpp_python": metadata.version("llama_cpp_python"),
    }
    result = {
        "model": path.name,
        "task": args.task,
        "prefix_tokens": prefix,
        "steps": args.steps,
        "rounds": args.rounds,
        "machine": machine,
        "layouts": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
