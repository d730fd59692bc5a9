"""Generation speed predicted here, from the file's size, this machine's memory bandwidth and
the `scheda bench` runs stored on it.

Why size predicts speed: generating one token on a CPU reads every weight once, and
the CPU waits on memory far more than it computes, so tokens/s is about
efficiency x bandwidth / bytes read per token, and the bytes read are the file's
size (the tied or untied output matrix is read whole each token; only the
embedding rows are not, a small share of a large model).

The bandwidth is measured once by a short probe (numpy copying a 256 MiB array,
one slice per physical core, the best of a few copies: about 0.3 s) and kept in
the cache folder with the machine it was measured on. It is a copy's bandwidth
(bytes read plus bytes written), not what llama.cpp reaches: the efficiency says
how much of it llama.cpp turns into tokens.

A small model is not purely bandwidth-bound: each token also costs a fixed time
(the compute graph built and run layer by layer, threads synchronised, the sampler,
the server loop), which is a large share of a 100 MB model's token and nothing of a
10 GB one's. So the time per token is modelled in two terms,

    seconds per token = fixed + bytes / (efficiency x bandwidth),

fitted to the stored runs of llama.cpp on this machine (at the default thread
count, the one `search` predicts for) by least squares on relative error. Runs
too few (under 3) or too alike in size (the largest under 1.5x the smallest)
cannot separate the two terms: then the fixed cost is 0 and the efficiency alone
is fitted. With no run stored, the efficiency is `DEFAULT_EFFICIENCY` and the
figure says it is uncalibrated. docs/benchmarks.md has the prediction against
measurements on the embedded model's quantized files.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from scheda import settings
from scheda.formulas.hardware import physical_cores
from scheda.stores.benches import FILENAME, BenchRun, BenchStore, fingerprint

PROBE_BYTES = 256 << 20  # past the last-level cache of nearly any CPU (two arrays: 512 MiB)
PROBE_COPIES = 4  # after one that touches the destination's pages
MEMORY = "bandwidth.json"
# The share of the probe's copy bandwidth llama.cpp's generation turns into weights read,
# used only before any bench run is stored: a conservative round guess (reads taken to
# reach half of what a copy moves), not a fit. The figure says "uncalibrated" while it is
# used, and the first `scheda bench` replaces it.
DEFAULT_EFFICIENCY = 0.5
MIN_RUNS_TWO_TERMS = 3
MIN_SPREAD_TWO_TERMS = 1.5
LLAMA_CPP = "llama.cpp"

_lock = threading.Lock()  # one probe at a time: concurrent copies would measure each other
_known: dict[str, Bandwidth] = {}


@dataclass(frozen=True)
class Bandwidth:
    """A copy's bytes (read and written) per second on a machine, and when it was measured."""

    bytes_per_s: float
    fingerprint: str
    measured: float


@dataclass(frozen=True)
class Calibration:
    """The two terms of the time per token, and what they were fitted to."""

    efficiency: float  # the share of the probe's bandwidth spent reading weights
    per_token_s: float  # the fixed cost of a token
    runs: int  # the bench runs fitted; 0: the default efficiency
    model: str  # "two-term", "one-term" or "uncalibrated"


@dataclass(frozen=True)
class Prediction:
    tokens_per_s: float
    bandwidth: Bandwidth
    calibration: Calibration

    def describe(self) -> str:
        """Where the figure comes from, in one line."""
        gbs = self.bandwidth.bytes_per_s / 1e9
        cal = self.calibration
        if cal.model == "uncalibrated":
            return (
                f"predicted from {gbs:.1f} GB/s measured here, uncalibrated: no `scheda bench` "
                f"run stored on this machine, efficiency {cal.efficiency:.2f} assumed"
            )
        runs = f"{cal.runs} bench run{'s' if cal.runs != 1 else ''}"
        if cal.model == "one-term":
            return f"predicted from {gbs:.1f} GB/s measured here, calibrated on {runs}"
        return (
            f"predicted from {gbs:.1f} GB/s measured here and {cal.per_token_s * 1e3:.1f} ms "
            f"a token of fixed cost, calibrated on {runs}"
        )


# -- the bandwidth: probed once per machine, kept -----------------------------------------


def probe(size: int = PROBE_BYTES, copies: int = PROBE_COPIES) -> float:
    """A copy's bandwidth here, bytes read plus written per second: the best of `copies`.

    One slice per physical core copied by its own thread (numpy releases the GIL while it
    copies), as llama.cpp reads its weights with one thread per physical core.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    workers = physical_cores()
    source = np.ones(size // 8)
    target = np.empty_like(source)
    cuts = [int(c) for c in np.linspace(0, source.size, workers + 1)]
    pairs = [(target[a:b], source[a:b]) for a, b in itertools.pairwise(cuts)]
    best = float("inf")
    with ThreadPoolExecutor(workers) as pool:
        for copy in range(copies + 1):
            start = time.perf_counter()
            list(pool.map(lambda pair: np.copyto(*pair), pairs))
            if copy:  # the first copy also faults the target's pages in
                best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best


def _memory() -> Path:
    return settings.cache_dir() / MEMORY


def _remembered(machine: str) -> Bandwidth | None:
    try:
        known = Bandwidth(**json.loads(_memory().read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    return known if known.fingerprint == machine and known.bytes_per_s > 0 else None


def _remember(found: Bandwidth) -> None:
    memory = _memory()
    try:
        memory.parent.mkdir(parents=True, exist_ok=True)
        partial = memory.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(asdict(found)), encoding="utf-8")
        partial.replace(memory)  # whole or not at all, for a reader in another process
    except OSError:
        pass  # a read-only cache costs a probe next time, nothing more


def bandwidth() -> Bandwidth:
    """This machine's copy bandwidth: remembered, or probed now and remembered."""
    machine = fingerprint()
    with _lock:
        found = _known.get(machine) or _remembered(machine)
        if found is None:
            found = Bandwidth(probe(), machine, time.time())
            _remember(found)
        _known[machine] = found
    return found


# -- the calibration: the stored bench runs of llama.cpp here -------------------------------


def calibration_runs(runs: Sequence[BenchRun], machine: str, threads: int) -> list[BenchRun]:
    """The runs that speak for a prediction here: llama.cpp, this machine, these threads."""
    return [
        r
        for r in runs
        if r.engine == LLAMA_CPP
        and r.fingerprint == machine
        and r.threads == threads
        and r.size > 0
        and r.tg > 0
    ]


def calibrate(points: Sequence[tuple[int, float]], bytes_per_s: float) -> Calibration:
    """The time per token's terms fitted to (bytes, tokens/s) points: both where the points
    can tell them apart, else the efficiency alone, else the default."""
    if not points:
        return Calibration(DEFAULT_EFFICIENCY, 0.0, 0, "uncalibrated")
    sizes = [size for size, _ in points]
    if len(points) >= MIN_RUNS_TWO_TERMS and max(sizes) >= MIN_SPREAD_TWO_TERMS * min(sizes):
        both = fit_two_terms(points, bytes_per_s)
        if both is not None:
            return both
    return fit_one_term(points, bytes_per_s)


def fit_one_term(points: Sequence[tuple[int, float]], bytes_per_s: float) -> Calibration:
    """The efficiency alone (no fixed cost): b minimising the sum of (b x bytes x rate - 1)^2,
    least squares on relative error, so a fast small model weighs as much as a slow large one.
    """
    xs = [size * rate for size, rate in points]
    slope = sum(xs) / sum(x * x for x in xs)
    return Calibration(1 / (slope * bytes_per_s), 0.0, len(points), "one-term")


def fit_two_terms(points: Sequence[tuple[int, float]], bytes_per_s: float) -> Calibration | None:
    """(a, b) minimising the sum of (a x rate + b x bytes x rate - 1)^2, by the normal
    equations; None where the fit is not physical (a negative fixed cost or slope)."""
    u = [rate for _, rate in points]
    v = [size * rate for size, rate in points]
    suu = sum(x * x for x in u)
    svv = sum(x * x for x in v)
    suv = sum(x * y for x, y in zip(u, v, strict=True))
    det = suu * svv - suv * suv
    if det <= 0:
        return None
    fixed = (svv * sum(u) - suv * sum(v)) / det
    slope = (suu * sum(v) - suv * sum(u)) / det
    if fixed < 0 or slope <= 0:
        return None
    return Calibration(1 / (slope * bytes_per_s), fixed, len(points), "two-term")


def predict(file_bytes: int, bytes_per_s: float, calibration: Calibration) -> float:
    """Tokens/s generating from a file of `file_bytes` here."""
    seconds = calibration.per_token_s + file_bytes / (calibration.efficiency * bytes_per_s)
    return 1 / seconds


def stored_runs() -> list[BenchRun]:
    """Every bench run stored in the data folder (none, without opening one, if it has none)."""
    path = settings.data_dir() / FILENAME
    if not path.is_file():
        return []
    with BenchStore(path) as store:
        return store.runs()


def prediction(file_bytes: int) -> Prediction | None:
    """Generation tokens/s for a GGUF of `file_bytes` here; None for an empty file."""
    if file_bytes <= 0:
        return None
    found = bandwidth()
    runs = calibration_runs(stored_runs(), found.fingerprint, physical_cores())
    calibration = calibrate([(r.size, r.tg) for r in runs], found.bytes_per_s)
    return Prediction(predict(file_bytes, found.bytes_per_s, calibration), found, calibration)
