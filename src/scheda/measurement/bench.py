"""`scheda bench`: load time, time to first token, pp512, tg128 and peak memory, side by side.

Each contender runs in fresh processes of its own (`python -m scheda.measurement.bench`),
so its load is cold and its peak memory is its own. The work is llama-bench's:
pp512 processes a 512-token prompt, tg128 generates 128 tokens past the
end-of-text token. There are `runs` rounds; in each, every contender runs in
turn (a new process, a warm-up, one measured run), and the medians over the
rounds are kept. Contenders:

- scheda: scheda's engine interface, as `generate` uses it (streamed, cancellable);
- engine: the same llama.cpp server called straight through xllamacpp, no scheda between;
- llama-cpp-python: the binding most Python users pick, when it is installed;
- transformers: the Hugging Face `text-generation` pipeline, the articles' method,
  on an HF folder (a GGUF is converted once and cached).

Cold time to first token is measured apart: a new `scheda generate` process,
from its start to the first byte of text on its stdout.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from scheda.errors import EngineError, UsageError, install_hint
from scheda.formulas.hardware import physical_cores

CONTENDERS = ("scheda", "engine", "llama-cpp-python", "transformers")
PP_TOKENS = 512  # llama-bench's defaults (-p 512 -n 128); `--pp` and `--tg` change them
TG_TOKENS = 128
# Plain words to build prompts of an exact size; shuffled per run so no run reuses
# the previous run's prompt cache.
WORDS = [
    "the",
    "model",
    "reads",
    "a",
    "long",
    "text",
    "about",
    "rivers",
    "mountains",
    "cities",
    "music",
    "history",
    "science",
    "bread",
    "weather",
    "trains",
    "letters",
    "gardens",
    "numbers",
    "stars",
    "oceans",
    "forests",
    "markets",
    "bridges",
    "winter",
    "summer",
    "language",
    "memory",
    "light",
    "stone",
    "paper",
    "glass",
    "water",
    "fire",
    "wind",
    "iron",
    "gold",
]
WORKER_TIMEOUT_S = 1800


@dataclass
class Result:
    """One contender's figures (medians); None where it does not apply."""

    contender: str
    load_s: float
    pp_tokens_per_s: float
    tg_tokens_per_s: float
    first_token_s: float | None
    peak_rss_mib: float
    runs: int
    detail: dict[str, Any] = field(default_factory=dict)


class Machine(TypedDict):
    """What the figures were measured on: kept with bench reports and comparisons."""

    cpu: str
    physical_cores: int | None
    memory_gib: float
    python: str
    versions: dict[str, str]


@dataclass
class Report:
    model: str
    results: list[Result]
    cold_first_token_s: float | None
    machine: Machine
    pp_tokens: int = PP_TOKENS
    tg_tokens: int = TG_TOKENS

    def ratio(self, metric: str, over: str) -> float | None:
        """scheda's figure for a metric divided by another contender's."""
        mine = self._get("scheda", metric)
        theirs = self._get(over, metric)
        return mine / theirs if mine and theirs else None

    def _get(self, contender: str, metric: str) -> float | None:
        for r in self.results:
            if r.contender == contender:
                return float(getattr(r, metric))
        return None

    def to_dict(self) -> dict[str, Any]:
        others = [r.contender for r in self.results if r.contender != "scheda"]
        return {
            "model": self.model,
            "machine": self.machine,
            "pp_tokens": self.pp_tokens,
            "tg_tokens": self.tg_tokens,
            "cold_first_token_s": self.cold_first_token_s,
            "results": [asdict(r) for r in self.results],
            "ratios": {
                o: {
                    "tg_tokens_per_s": self.ratio("tg_tokens_per_s", o),
                    "pp_tokens_per_s": self.ratio("pp_tokens_per_s", o),
                }
                for o in others
            },
        }


def machine() -> Machine:
    """What the figures were measured on."""
    import platform
    from importlib import metadata

    import psutil

    versions: dict[str, str] = {}
    for package in ("scheda", "xllamacpp", "llama_cpp_python", "transformers", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": platform.processor() or platform.machine(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "versions": versions,
    }


# The parent: one worker process per contender ---------------------------------------------


def run_bench(
    model: str,
    path: Path,
    vs: list[str],
    runs: int,
    threads: int | None,
    hf_folder: Path | None,
    progress: Callable[[str], None] = lambda _: None,
    pp: int = PP_TOKENS,
    tg: int = TG_TOKENS,
) -> Report:
    """Run scheda and each contender in `vs`, one fresh process each: pp`pp` and tg`tg`."""
    for name in vs:
        if name not in CONTENDERS[1:]:
            raise UsageError(f"--vs {name!r}: choose from {', '.join(CONTENDERS[1:])}")
    names = ["scheda", *vs]
    # Round-robin: each round runs every contender once (a fresh process, a warm-up, one
    # measured run), so a slow spell of the machine falls on all of them alike.
    rounds: dict[str, list[Result]] = {name: [] for name in names}
    for round_ in range(1, runs + 1):
        for name in names:
            target = hf_folder if name == "transformers" else path
            progress(f"round {round_}/{runs}: {name} (pp{pp}, tg{tg})")
            rounds[name].append(_worker(name, target, 1, threads, pp, tg))
    results = [_combine(rounds[name]) for name in names]
    progress("cold start: a new `scheda generate` to its first token")
    cold = cold_first_token(str(path), runs)
    return Report(model, results, cold, machine(), pp, tg)


def measure_models(
    targets: list[tuple[str, Path]],
    runs: int,
    threads: int | None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[Result]:
    """One contender (`scheda` for a GGUF, `transformers` for an HF folder) on each of several
    models, round-robin as `run_bench` does: `scheda compare`'s load, pp512 and tg128."""
    rounds: list[list[Result]] = [[] for _ in targets]
    for round_ in range(1, runs + 1):
        for i, (contender, path) in enumerate(targets):
            progress(f"round {round_}/{runs}: {path.name} (pp{PP_TOKENS}, tg{TG_TOKENS})")
            rounds[i].append(_worker(contender, path, 1, threads))
    return [_combine(r) for r in rounds]


def _combine(rounds: list[Result]) -> Result:
    """The medians over rounds (the peak memory: the highest); every run kept in `detail`."""
    first_tokens = [r.first_token_s for r in rounds if r.first_token_s is not None]
    return Result(
        contender=rounds[0].contender,
        load_s=statistics.median(r.load_s for r in rounds),
        pp_tokens_per_s=statistics.median(r.pp_tokens_per_s for r in rounds),
        tg_tokens_per_s=statistics.median(r.tg_tokens_per_s for r in rounds),
        first_token_s=statistics.median(first_tokens) if first_tokens else None,
        peak_rss_mib=max(r.peak_rss_mib for r in rounds),
        runs=len(rounds),
        detail={
            "load_s": [r.load_s for r in rounds],
            "pp_tokens_per_s": [r.pp_tokens_per_s for r in rounds],
            "tg_tokens_per_s": [r.tg_tokens_per_s for r in rounds],
        },
    )


def _worker(
    contender: str,
    path: Path | None,
    runs: int,
    threads: int | None,
    pp: int = PP_TOKENS,
    tg: int = TG_TOKENS,
) -> Result:
    if path is None:
        raise UsageError(f"{contender} needs an HF folder")
    command = [sys.executable, "-m", "scheda.measurement.bench", contender, str(path), str(runs)]
    command += [str(pp), str(tg), str(threads or 0)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise EngineError(f"the {contender} benchmark failed: {last}")
    return Result(**json.loads(done.stdout.strip().splitlines()[-1]))


def cold_first_token(model: str, runs: int) -> float:
    """Median seconds from starting `scheda generate` to its first byte of text."""
    command = [sys.executable, "-m", "scheda", "generate", model, "Hello", "-m", "4", "-t", "0"]
    env = {**os.environ, "COLUMNS": "120"}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert child.stdout is not None
        first = child.stdout.read(1)
        elapsed = time.perf_counter() - start
        child.communicate(timeout=120)
        if not first or child.returncode != 0:
            raise EngineError(f"`{' '.join(command[2:])}` printed nothing: cannot time it")
        times.append(elapsed)
    return statistics.median(times)


# The workers: each measures one contender in its own process ------------------------------


def prompt_of(count: Callable[[str], int], tokens: int, seed: int) -> str:
    """Plain words shuffled by `seed`, as many as make `tokens` tokens (or one token less)."""
    rng = random.Random(seed)
    words: list[str] = []
    while count(" ".join(words)) < tokens:
        words.extend(rng.sample(WORDS, len(WORDS)))
    low, high = 0, len(words)
    while low < high:  # the longest prefix of words that stays within `tokens`
        middle = (low + high + 1) // 2
        if count(" ".join(words[:middle])) <= tokens:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low])


def _measure(
    runs: int,
    load_s: float,
    one_pp: Callable[[str], tuple[float, int]],
    one_tg: Callable[[], tuple[float, int, float | None]],
    count: Callable[[str], int],
    contender: str,
    pp: int,
) -> Result:
    """Warm up once, then the median of `runs` runs of the prompt (`pp` tokens) and generation."""
    pp_rates, tg_rates, ttfts = [], [], []
    for run in range(runs + 1):
        seconds, n = one_pp(prompt_of(count, pp, seed=run))
        tg_seconds, generated, ttft = one_tg()
        if run == 0:
            continue  # the warm-up
        pp_rates.append(n / seconds)
        tg_rates.append(generated / tg_seconds)
        if ttft is not None:
            ttfts.append(ttft)
    peak_kib = peak_rss_kib()
    return Result(
        contender=contender,
        load_s=load_s,
        pp_tokens_per_s=statistics.median(pp_rates),
        tg_tokens_per_s=statistics.median(tg_rates),
        first_token_s=statistics.median(ttfts) if ttfts else None,
        peak_rss_mib=peak_kib / 1024,
        runs=runs,
    )


def peak_rss_kib() -> int:
    """This process's peak resident memory, in KiB.

    Linux's VmHWM belongs to the process's own address space; getrusage's
    ru_maxrss survives exec, so a worker would inherit its parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _tg_rate(total_s: float, first_s: float, generated: int) -> tuple[float, int]:
    """Generation rate excludes the prompt: tokens after the first, over the time after it."""
    return total_s - first_s, generated - 1


def bench_scheda(path: Path, runs: int, threads: int | None, pp: int, tg: int) -> Result:
    from scheda.engines import open_model
    from scheda.sampling import Sampling

    engine = open_model(path, "llama.cpp", context=pp + tg + 64, threads=threads)
    count = engine.count_tokens

    def one_pp(prompt: str) -> tuple[float, int]:
        g = engine.generate(prompt, Sampling(max_tokens=1, temperature=0))
        return g.timings.first_token_s, g.prompt_tokens

    def one_tg() -> tuple[float, int, float | None]:
        g = engine.generate(
            "Once upon a time", Sampling(max_tokens=tg, temperature=0, ignore_eos=True)
        )
        seconds, n = _tg_rate(g.timings.total_s, g.timings.first_token_s, g.completion_tokens)
        return seconds, n, g.timings.first_token_s

    return _measure(runs, engine.load_s, one_pp, one_tg, count, "scheda", pp)


def bench_engine(path: Path, runs: int, threads: int | None, pp: int, tg: int) -> Result:
    """The same llama.cpp server, called straight through xllamacpp: no scheda in between."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = pp + tg + 64
    params.n_parallel = 1
    params.cpuparams.n_threads = threads or physical_cores()
    params.cpuparams_batch.n_threads = threads or physical_cores()
    params.fit_params = False
    params.verbosity = -1
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    start = time.perf_counter()
    server = xllamacpp.Server(params)
    load_s = time.perf_counter() - start

    def complete(body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        first: list[float] = []
        last: dict[str, Any] = {}

        def chunk(data: dict[str, Any]) -> bool:
            if not first and any(c.get("text") for c in data.get("choices", [])):
                first.append(time.perf_counter())
            last.update(data)
            return False

        start = time.perf_counter()
        server.handle_completions({**body, "stream": True}, chunk)
        return (first[0] - start) if first else 0.0, {"total": time.perf_counter() - start, **last}

    address = str(server.listening_address)

    def count(text: str) -> int:  # llama.cpp's own tokenizer, on its loopback listener
        body = json.dumps({"content": text, "add_special": True}).encode()
        with urllib.request.urlopen(address + "/tokenize", body, timeout=60) as answer:
            return len(json.loads(answer.read())["tokens"])

    def one_pp(prompt: str) -> tuple[float, int]:
        ttft, last = complete({"prompt": prompt, "max_tokens": 1, "temperature": 0})
        return ttft, int(last["usage"]["prompt_tokens"])

    def one_tg() -> tuple[float, int, float | None]:
        body = {"prompt": "Once upon a time", "max_tokens": tg, "temperature": 0}
        ttft, last = complete(
            {**body, "ignore_eos": True, "stream_options": {"include_usage": True}}
        )
        generated = int(last["usage"]["completion_tokens"])
        seconds, n = _tg_rate(last["total"], ttft, generated)
        return seconds, n, ttft

    return _measure(runs, load_s, one_pp, one_tg, count, "engine", pp)


def bench_llama_cpp_python(path: Path, runs: int, threads: int | None, pp: int, tg: int) -> Result:
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise UsageError(
            f"llama-cpp-python is not installed: run {install_hint('eval')} (it compiles llama.cpp)"
        ) from exc
    start = time.perf_counter()
    llm = Llama(
        str(path),
        n_ctx=pp + tg + 64,
        n_threads=threads or physical_cores(),
        verbose=False,
    )
    load_s = time.perf_counter() - start
    eos = llm.token_eos()

    def count(text: str) -> int:
        return len(llm.tokenize(text.encode(), add_bos=True))

    def one_pp(prompt: str) -> tuple[float, int]:
        llm.reset()
        start = time.perf_counter()
        llm.create_completion(prompt, max_tokens=1, temperature=0)
        return time.perf_counter() - start, count(prompt)

    def one_tg() -> tuple[float, int, float | None]:
        llm.reset()
        start = time.perf_counter()
        first = 0.0
        generated = 0
        for _ in llm.create_completion(
            "Once upon a time",
            max_tokens=tg,
            temperature=0,
            stream=True,
            logit_bias={eos: -1e9},
        ):
            generated += 1
            if not first:
                first = time.perf_counter() - start
        seconds, n = _tg_rate(time.perf_counter() - start, first, generated)
        return seconds, n, first

    return _measure(runs, load_s, one_pp, one_tg, count, "llama-cpp-python", pp)


def bench_transformers(path: Path, runs: int, threads: int | None, pp: int, tg: int) -> Result:
    """The articles' method: `pipeline("text-generation")` on the HF folder, greedy, on the CPU."""
    try:
        import torch
        from transformers import pipeline
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise UsageError(
            f"transformers is not installed: run {install_hint('transformers')}"
        ) from exc
    hf_logging.set_verbosity_error()
    torch.set_num_threads(threads or physical_cores())
    start = time.perf_counter()
    # float32: the CPU's fast path (half-precision matmuls are slow on most CPUs).
    pipe = pipeline("text-generation", model=str(path), device="cpu", dtype=torch.float32)
    load_s = time.perf_counter() - start
    tokenizer = pipe.tokenizer
    assert tokenizer is not None

    def count(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    def one_pp(prompt: str) -> tuple[float, int]:
        start = time.perf_counter()
        pipe(prompt, max_new_tokens=1, do_sample=False)
        return time.perf_counter() - start, count(prompt)

    def one_tg() -> tuple[float, int, float | None]:
        start = time.perf_counter()
        pipe(
            "Once upon a time",
            max_new_tokens=tg,
            min_new_tokens=tg,
            do_sample=False,
        )
        # The pipeline gives no first-token time: its whole time is the generation's.
        return time.perf_counter() - start, tg, None

    return _measure(runs, load_s, one_pp, one_tg, count, "transformers", pp)


WORKERS: dict[str, Callable[[Path, int, int | None, int, int], Result]] = {
    "scheda": bench_scheda,
    "engine": bench_engine,
    "llama-cpp-python": bench_llama_cpp_python,
    "transformers": bench_transformers,
}


def _main(argv: list[str]) -> None:
    contender, path, runs = argv[0], Path(argv[1]), int(argv[2])
    pp, tg, threads = int(argv[3]), int(argv[4]), int(argv[5]) or None
    try:
        result = WORKERS[contender](path, runs, threads, pp, tg)
    except Exception as exc:  # reported to the parent as one line
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    _main(sys.argv[1:])
