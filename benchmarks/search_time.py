"""How long `scheda search` takes over a slow Hub: the table in docs/benchmarks.md.

    .venv/bin/python benchmarks/search_time.py [--rounds 3] [--delay 0.1]

No hub is reachable from the reference machine, so the test Hub (tests/hub.py)
serves 20 repositories on loopback by the Hub's own protocol and answers every
request, the search's and each read's, after `--delay` seconds (a round trip
to a distant Hub). The repositories are made from the real files: the embedded
GGUF under 14 names, its split copy under 3, the MiniLM folder under 3. The
client is `huggingface_hub`'s (`list_models`, then each repository's listing
and its header's range requests, as `scheda card` reads one).

Three ways, each the median of the rounds, in one process:

- cold, 8 at once: an empty cache, the repositories read by `search/rows`'s
  pool (what `scheda search` does the first time);
- cold, one at a time: the same with a pool of one (what the pool saves);
- warm: the same search again, the cache holding every repository at its
  commit, so the search's own request is the only one.

For each: the wall time of `scheda.search.rows.search` (the search, the reads,
the fit of every row; not the CLI's start-up), the requests the Hub answered,
and the most that were in flight at once.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test Hub and the split GGUF's writer live in tests/

from tests.conftest import minilm_folder  # noqa: E402
from tests.gguf_variants import split  # noqa: E402
from tests.hub import Hub, Meta, folder_files, serving  # noqa: E402

from scheda.formulas import hardware  # noqa: E402
from scheda.resolve import default_model_path  # noqa: E402
from scheda.search import rows  # noqa: E402

QUERY = "bench-search"


def online(hub: Hub) -> None:
    """Point `huggingface_hub` at the test Hub (it read its settings at import)."""
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = False
    constants.ENDPOINT = hub.url
    constants.HUGGINGFACE_CO_URL_TEMPLATE = hub.url + "/{repo_id}/resolve/{revision}/{filename}"


def repositories(hub: Hub, scratch: Path) -> None:
    gguf, minilm = default_model_path(), minilm_folder()
    parts = split(gguf, scratch)
    for i in range(20):
        name = f"{QUERY}/model-{i:02d}"
        files: dict[str, Path | bytes]
        if i < 14:
            files = {gguf.name: gguf}
        elif i < 17:
            files = {p.name: p for p in parts}
        else:
            files = dict(folder_files(minilm))
        hub.add(name, files, meta=Meta(downloads=1000 - i))


def timed(hub: Hub, fresh_cache: Callable[[], None]) -> tuple[float, int, int, int]:
    """(seconds, requests, most in flight at once, rows) of one search."""
    fresh_cache()
    hub.log.clear()
    hub.peak = 0
    start = time.perf_counter()
    result = rows.search(QUERY, hardware.host(), limit=20)
    seconds = time.perf_counter() - start
    assert len(result.rows) == 20 and not any(r.error for r in result.rows), result.rows
    return seconds, len(hub.requests()), hub.peak, len(result.rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        os.environ["HF_HOME"] = str(base / "hf-home")
        hub = Hub()
        repositories(hub, base)
        round_no = iter(range(1_000_000))

        def empty() -> None:
            os.environ["SCHEDA_CACHE_DIR"] = str(base / f"cache-{next(round_no)}")

        def kept() -> None:
            """The cache as the last search left it."""

        with serving(hub):
            online(hub)
            rows.search(QUERY, hardware.host(), limit=20)  # imports and the client warmed up
            hub.delay_s = args.delay
            results = {}
            # Warm last: it reads the cache the last cold round of the pool filled.
            for label, workers, cache in (
                ("cold, one at a time", 1, empty),
                ("cold, 8 at once", 8, empty),
                ("warm: every repository in the cache", 8, kept),
            ):
                rows.WORKERS = workers
                results[label] = [timed(hub, cache) for _ in range(args.rounds)]
    print(
        f"# {platform.machine()}, Python {platform.python_version()}, huggingface_hub "
        f"{version('huggingface_hub')}; {args.delay * 1000:.0f} ms a request, medians of "
        f"{args.rounds} rounds\n"
    )
    print("| search of 20 repositories | wall time | requests | most in flight at once |")
    print("| --- | --- | --- | --- |")
    for label, runs in results.items():
        seconds = statistics.median(r[0] for r in runs)
        requests = statistics.median(r[1] for r in runs)
        peak = max(r[2] for r in runs)
        print(f"| {label} | {seconds:.2f} s | {requests:.0f} | {peak} |")


if __name__ == "__main__":
    main()
