"""BBH and AGIEval: scheda against lm-evaluation-harness on the same items, item by item.

    .venv/bin/python benchmarks/lm_eval_agreement.py [--data DIR] [--bbh-per-task 8]
        [--agieval-per-subset 25] [--max-tokens 64] [--work DIR] [--results DIR] [--fresh]
        [--out docs/lm_eval_agreement.json]

The items: the first `--bbh-per-task` questions of each of BBH's 27 tasks
(216 by default) and the first `--agieval-per-subset` of each of AGIEval's 9
English subsets (225: 200 of multiple choice, 25 of math), from the release
files in DIR (`bbh/tasks`, `bbh/cot-prompts`, `agieval/*.jsonl`).

The four sides, one after another on each chunk of tasks (an AGIEval
subset, three BBH tasks), each chunk's per-item results kept in `--results`
(docs/lm_eval_agreement/, committed with the report) as they end and the
report rewritten (a later run reuses what is there; `--fresh` measures
again):

- lm-eval: `simple_evaluate` with its `hf` model (float32, CPU, batch size 1,
  so that no padding moves a number) on the HF folder `scheda convert` makes
  of the embedded GGUF; its own task YAMLs (`bbh_cot_fewshot_<task>`,
  `agieval_<subset>`), the dataset swapped for the same rows in memory (BBH:
  the release's, which are SaylorTwift/bbh's; AGIEval: hails-shaped rows made
  from the release lines by AGIEval's zero-shot construction), its samples
  logged for the per-item comparison.
- scheda, HF folder: the same folder through scheda's transformers scorer and
  engine (`EvalModel`, one slot), the tasks `bbh` and `agieval` in process.
- lm-eval on the GGUF: its `local-completions` model (the same task YAMLs and
  rows) against `scheda serve` on the embedded GGUF (one slot), tokens through
  the server's remote tokenizer, log-likelihoods from `echo` and `logprobs`:
  lm-eval's prompts, requests and metrics on llama.cpp's numbers.
- scheda, GGUF: the embedded Q4_1 GGUF through llama.cpp (one slot).

BBH's generations are cut at `--max-tokens` new tokens on every side
(lm-eval's YAML says 1,024: hours on a CPU); the comparison is of the texts
and the answers read from them, which a shared cap leaves like for like, but
the scores are of cut reasoning, far below the model's own.

Per item: BBH, the same generated text, the same answer, the same
exact_match; AGIEval, the same acc and acc_norm (and the largest gap between
two log-likelihoods), math, the same text and acc. The targets: on the HF
folder, identical results; on the GGUF, scheda's score within 0.5 points of
lm-eval's on the same GGUF (also reported: against lm-eval on the float32
folder, which measures the quantization as well as the two harnesses).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from multiturn_cache import HOST, serving  # the sibling benchmark's `scheda serve`, ready

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
# Hours of CPU in all: the chunks done are kept beside the report, so that a run stopped
# early (or on another day) goes on from them.
RESULTS = ROOT / "docs" / "lm_eval_agreement"


@dataclass(frozen=True)
class Chunk:
    """Tasks measured together on every side before the next chunk starts."""

    name: str
    bbh: tuple[str, ...] = ()
    agieval: tuple[str, ...] = ()


def chunks() -> list[Chunk]:
    """Small, so that a run stopped early loses little: an AGIEval subset, or 3 BBH tasks."""
    from scheda.evaluation.agieval import DEFAULT_SUBSETS
    from scheda.evaluation.bbh import SUBTASKS

    agieval = [Chunk(f"agieval-{subset}", agieval=(subset,)) for subset in DEFAULT_SUBSETS]
    bbh = [Chunk(f"bbh-{n + 1}", bbh=SUBTASKS[3 * n : 3 * n + 3]) for n in range(9)]
    # In turn, so that a run stopped early holds some of both.
    return [chunk for pair in zip(agieval, bbh, strict=True) for chunk in pair]


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in ("scheda", "lm_eval", "torch", "transformers", "llama_cpp_python"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def machine() -> dict[str, Any]:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "threads": psutil.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


# -- the items, and lm-eval's tasks over the same rows -------------------------------------------


def hails_row(line: dict[str, Any], subset: str) -> dict[str, Any]:
    """A hails/agieval-<subset> row from a release line (AGIEval's convert_zero_shot)."""
    from scheda.evaluation.agieval import release_item

    return release_item(line, subset, subset)


def lm_eval_tasks(chunk: Chunk, args: argparse.Namespace) -> list[Any]:
    """lm-eval's own tasks from its YAMLs, their test split the release's rows."""
    import datasets
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    root = Path(str(importlib.import_module("lm_eval.tasks").__file__)).parent
    tasks = []

    def task(yaml: Path, rows: list[dict[str, Any]]) -> Any:
        config = load_yaml(yaml)
        table = datasets.Dataset.from_list(rows)
        config["custom_dataset"] = lambda **_: datasets.DatasetDict({"test": table})
        if config.get("output_type") == "generate_until" and "bbh" in config["task"]:
            config["generation_kwargs"] = {
                **config["generation_kwargs"],
                "max_gen_toks": args.max_tokens,
            }
        return ConfigurableTask(config=config)

    for subtask in chunk.bbh:
        path = args.data / "bbh" / "tasks" / f"{subtask}.json"
        rows = json.loads(path.read_text())["examples"][: args.bbh_per_task]
        tasks.append(task(root / "bbh" / "cot_fewshot" / f"{subtask}.yaml", rows))
    for subset in chunk.agieval:
        with (args.data / "agieval" / f"{subset}.jsonl").open(encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()][: args.agieval_per_subset]
        rows = [hails_row(line, subset) for line in lines]
        tasks.append(task(root / "agieval" / f"{subset}.yaml", rows))
    return tasks


def key_of(task_name: str, doc_id: int) -> str:
    """lm-eval's task name and doc index as scheda's item key (`navigate/3`, `lsat-ar/0`)."""
    if task_name.startswith("bbh_cot_fewshot_"):
        return f"{task_name.removeprefix('bbh_cot_fewshot_')}/{doc_id}"
    subset = task_name.removeprefix("agieval_").replace("_", "-")
    return f"{subset}/{doc_id}"


# -- the sides ---------------------------------------------------------------------------------


def run_lm_eval(folder: Path, chunk: Chunk, args: argparse.Namespace) -> dict[str, Any]:
    import lm_eval

    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={folder},dtype=float32",
        device="cpu",
        batch_size=1,
        tasks=lm_eval_tasks(chunk, args),
        log_samples=True,
    )
    return sample_items(out)


def run_lm_eval_served(url: str, chunk: Chunk, args: argparse.Namespace) -> dict[str, Any]:
    """lm-eval's `local-completions` model against `scheda serve` on the GGUF: lm-eval's
    prompts, requests and metrics, llama.cpp's numbers (the tokens through the server's
    remote tokenizer, log-likelihoods from `echo` with `logprobs`)."""
    import lm_eval

    out = lm_eval.simple_evaluate(
        model="local-completions",
        model_args=(
            f"model=default,base_url={url}/v1/completions,tokenizer_backend=remote,"
            "num_concurrent=1,max_retries=1,tokenized_requests=True"
        ),
        tasks=lm_eval_tasks(chunk, args),
        log_samples=True,
    )
    return sample_items(out)


def sample_items(out: dict[str, Any]) -> dict[str, Any]:
    """Per-item results from lm-eval's logged samples, keyed as scheda keys its items."""
    items: dict[str, Any] = {}
    for name, samples in out["samples"].items():
        for sample in samples:
            key = key_of(name, int(sample["doc_id"]))
            if name.startswith("bbh_"):
                items[key] = {
                    "generation": sample["resps"][0][0],
                    "answer": sample["filtered_resps"][0],
                    "exact_match": float(sample["exact_match"]),
                }
            elif name == "agieval_math":
                items[key] = {"generation": sample["resps"][0][0], "acc": float(sample["acc"])}
            else:
                items[key] = {
                    "acc": float(sample["acc"]),
                    "acc_norm": float(sample["acc_norm"]),
                    "logliks": [float(r[0][0]) for r in sample["resps"]],
                }
    return items


def run_scheda(model_path: Path, chunk: Chunk, args: argparse.Namespace) -> dict[str, Any]:
    from scheda.evaluation.agieval import AGIEval
    from scheda.evaluation.base import EvalModel
    from scheda.evaluation.bbh import BBH

    model = EvalModel(model_path, context=4096, parallel=1)
    items: dict[str, Any] = {}
    try:
        if chunk.bbh:
            bbh = BBH(
                limit=args.bbh_per_task,
                data_dir=args.data / "bbh",
                subtasks=list(chunk.bbh),
                max_tokens=args.max_tokens,
            )
            for result in bbh.run(bbh.items(), model):
                items[result.key] = {
                    "generation": result.detail["generation"],
                    "answer": result.detail["answer"],
                    "exact_match": result.metrics["exact_match"],
                }
        if chunk.agieval:
            agieval = AGIEval(
                limit=args.agieval_per_subset,
                data_dir=args.data / "agieval",
                subsets=list(chunk.agieval),
            )
            for result in agieval.run(agieval.items(), model):
                entry: dict[str, Any] = dict(result.metrics)
                if "generation" in result.detail:
                    entry["generation"] = result.detail["generation"]
                else:
                    entry["logliks"] = result.detail["logliks"]
                items[result.key] = entry
    finally:
        model.close()
    return items


# -- the comparison ----------------------------------------------------------------------------


def compare(reference: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Per-item agreement of `other` with `reference`, and both sides' scores."""
    keys = sorted(reference.keys() & other.keys())
    bbh_keys = [k for k in keys if "generation" in reference[k] and "answer" in reference[k]]
    math_keys = [k for k in keys if k.startswith("math/")]
    mc_keys = [k for k in keys if "acc_norm" in reference[k]]

    def same(field: str, among: list[str]) -> int:
        return sum(reference[k][field] == other[k][field] for k in among)

    def mean(side: dict[str, Any], field: str, among: list[str]) -> float:
        return 100 * sum(side[k][field] for k in among) / len(among) if among else float("nan")

    gaps = [
        max(abs(a - b) for a, b in zip(reference[k]["logliks"], other[k]["logliks"], strict=True))
        for k in mc_keys
    ]
    agieval_keys = mc_keys + math_keys
    result = {
        "items_in_common": len(keys),
        "bbh": {
            "items": len(bbh_keys),
            "same_generation": same("generation", bbh_keys),
            "same_answer": same("answer", bbh_keys),
            "same_exact_match": same("exact_match", bbh_keys),
            "exact_match": [
                mean(reference, "exact_match", bbh_keys),
                mean(other, "exact_match", bbh_keys),
            ],
        },
        "agieval": {
            "items": len(agieval_keys),
            "same_acc": same("acc", agieval_keys),
            "same_acc_norm": same("acc_norm", mc_keys),
            "same_math_generation": same("generation", math_keys),
            "acc": [mean(reference, "acc", agieval_keys), mean(other, "acc", agieval_keys)],
            "acc_norm": [mean(reference, "acc_norm", mc_keys), mean(other, "acc_norm", mc_keys)],
            "largest_loglik_gap": max(gaps) if gaps else None,
        },
    }
    fields = ("generation", "answer", "exact_match", "acc", "acc_norm")  # not the log-likelihoods
    differing = [k for k in keys if any(reference[k].get(f) != other[k].get(f) for f in fields)]
    result["differing_items"] = differing[:40]
    return result


def side(work: Path, name: str, fresh: bool, measure: Any) -> tuple[dict[str, Any], float]:
    """A side's per-item results on a chunk and its seconds, measured now or read back."""
    path = work / f"{name}.json"
    if path.is_file() and not fresh:
        print(f"{name}: reusing {path}", flush=True)
        saved = json.loads(path.read_text())
        return dict(saved["items"]), float(saved["seconds"])
    print(f"{name}: measuring...", flush=True)
    start = time.monotonic()
    items = measure()
    seconds = round(time.monotonic() - start, 1)
    path.write_text(json.dumps({"seconds": seconds, "items": items}, indent=1))
    print(f"{name}: {len(items)} items in {seconds} s", flush=True)
    return dict(items), seconds


def hf_folder(work: Path) -> Path:
    """The embedded GGUF converted to an HF folder (float16 safetensors), once."""
    from scheda.files.convert import convert
    from scheda.resolve import default_model_path

    out = work / "smollm-hf"
    if not (out / "config.json").is_file():
        convert(default_model_path(), out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--bbh-per-task", type=int, default=8)
    parser.add_argument("--agieval-per-subset", type=int, default=25)
    parser.add_argument("--max-tokens", type=int, default=64, help="BBH's new tokens, all sides")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "scheda-lm-eval-agreement",
        help="where the HF folder is made",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="each chunk's per-item results, per side (kept, so that a later run goes on)",
    )
    parser.add_argument("--fresh", action="store_true", help="measure every side again")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "lm_eval_agreement.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)

    from scheda.resolve import default_model_path

    folder = hf_folder(args.work)
    names = ("lm-eval", "scheda-hf", "lm-eval-gguf", "scheda-gguf")
    sides: dict[str, dict[str, Any]] = {name: {} for name in names}
    seconds: dict[str, float] = dict.fromkeys(sides, 0.0)
    done: list[str] = []
    with contextlib.ExitStack() as stack:
        urls: list[str] = []

        def served() -> str:
            """`scheda serve` on the GGUF, one slot, started the first time a chunk needs it."""
            if not urls:
                running = stack.enter_context(serving("default", 1, 4096, args.work))
                urls.append(f"http://{HOST}:{running.port}")
            return urls[0]

        def measure(name: str, chunk: Chunk) -> dict[str, Any]:
            if name == "lm-eval":
                return run_lm_eval(folder, chunk, args)
            if name == "lm-eval-gguf":
                return run_lm_eval_served(served(), chunk, args)
            model = folder if name == "scheda-hf" else default_model_path()
            return run_scheda(model, chunk, args)

        # Chunk by chunk, every side, so that a run stopped early leaves whole comparisons.
        for chunk in chunks():
            for name in sides:
                work = partial(measure, name, chunk)
                items, took = side(args.results, f"{chunk.name}-{name}", args.fresh, work)
                sides[name].update(items)
                seconds[name] += took
            done.append(chunk.name)
            write_report(args, done, seconds, sides)


def write_report(
    args: argparse.Namespace,
    done: list[str],
    seconds: dict[str, float],
    sides: dict[str, dict[str, Any]],
) -> None:
    report = {
        "machine": machine(),
        "versions": versions(),
        "items": {
            "bbh": f"first {args.bbh_per_task} of each task",
            "agieval": f"first {args.agieval_per_subset} of each subset",
            "chunks_done": done,
        },
        "bbh_max_tokens": args.max_tokens,
        "seconds": {name: round(s, 1) for name, s in seconds.items()},
        "hf_folder_vs_lm_eval": compare(sides["lm-eval"], sides["scheda-hf"]),
        "gguf_vs_lm_eval": compare(sides["lm-eval"], sides["scheda-gguf"]),
        "gguf_vs_lm_eval_on_the_gguf": compare(sides["lm-eval-gguf"], sides["scheda-gguf"]),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    shown = {
        k: report[k]
        for k in ("items", "hf_folder_vs_lm_eval", "gguf_vs_lm_eval", "gguf_vs_lm_eval_on_the_gguf")
    }
    print(json.dumps(shown, indent=2), flush=True)


if __name__ == "__main__":
    main()
