"""The bytes and requests a card read on the Hub takes: the table in docs/benchmarks.md.

    .venv/bin/python benchmarks/hub_read.py [--rounds 5]

No hub is reachable from the reference machine, so the test Hub (tests/hub.py)
serves the real files on loopback, by the Hub's own protocol, and the client is
`huggingface_hub`'s: the listing, resolve URLs, the redirect of an LFS file to
its storage host, range requests. Three repositories: the embedded SmolLM2
GGUF (Q4_1), the same model split in two parts as `llama-gguf-split` writes
them, and the MiniLM folder (safetensors). For each: the model's size (what a
download would take), its metadata (a GGUF's header up to its tensor data; a
safetensors file's JSON header), the bytes `scheda card` read and the requests
it made (the listing included; redirects not counted), and the wall time of
the read in-process, median of the rounds. On loopback the time is scheda's
own work and the client's; over a real network each request adds a round trip.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test Hub and the split GGUF's writer live in tests/

from tests.conftest import minilm_folder  # noqa: E402
from tests.gguf_variants import split  # noqa: E402
from tests.hub import Hub, folder_files, serving  # noqa: E402

from scheda.readers.gguf_header import read_header  # noqa: E402
from scheda.readers.source import FileSource  # noqa: E402
from scheda.resolve import default_model_path, resolve  # noqa: E402
from scheda.spec import ModelSpec  # noqa: E402
from scheda.units import size  # noqa: E402


def gguf_metadata(paths: list[Path]) -> int:
    """Bytes before the tensor data, every part's."""
    total = 0
    for path in paths:
        with FileSource(path) as source:
            total += read_header(source).data_offset
    return total


def safetensors_metadata(folder: Path) -> int:
    with (folder / "model.safetensors").open("rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")


def online(hub: Hub) -> None:
    """Point `huggingface_hub` at the test Hub (it read its settings at import)."""
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = False
    constants.ENDPOINT = hub.url
    constants.HUGGINGFACE_CO_URL_TEMPLATE = hub.url + "/{repo_id}/resolve/{revision}/{filename}"


def measure(ref: str, rounds: int) -> tuple[ModelSpec, float]:
    times = []
    spec = None
    for _ in range(rounds):
        start = time.perf_counter()
        spec = resolve(ref)
        times.append(time.perf_counter() - start)
    assert spec is not None and spec.remote is not None
    return spec, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    gguf, minilm = default_model_path(), minilm_folder()
    with tempfile.TemporaryDirectory() as scratch:
        parts = split(gguf, Path(scratch))
        hub = Hub()
        hub.add("bench/SmolLM2-GGUF", {gguf.name: gguf})
        hub.add("bench/SmolLM2-split-GGUF", {p.name: p for p in parts})
        hub.add("bench/all-MiniLM-L6-v2", folder_files(minilm))
        rows = [
            ("embedded SmolLM2 GGUF (Q4_1)", "bench/SmolLM2-GGUF", [gguf], gguf_metadata([gguf])),
            ("the same, split in 2 parts", "bench/SmolLM2-split-GGUF", parts, gguf_metadata(parts)),
            (
                "MiniLM (safetensors folder)",
                "bench/all-MiniLM-L6-v2",
                sorted(p for p in minilm.rglob("*") if p.is_file()),
                safetensors_metadata(minilm),
            ),
        ]
        print(f"# {platform.machine()}, Python {platform.python_version()}, ", end="")
        print(f"huggingface_hub {version('huggingface_hub')}; medians of {rounds} rounds\n")
        print("| repository | model's files | metadata | read | requests | wall time |")
        print("| --- | --- | --- | --- | --- | --- |")
        with serving(hub):
            online(hub)
            for label, ref, files, metadata in rows:
                spec, seconds = measure(ref, rounds)
                read = spec.remote
                assert read is not None
                whole = sum(p.stat().st_size for p in files)
                print(
                    f"| {label} | {size(whole)} | {size(metadata)} | "
                    f"{read.bytes:,} bytes ({size(read.bytes)}) | {read.requests} | "
                    f"{seconds * 1000:.0f} ms |"
                )
                print(f"<!-- files read: {', '.join(read.files_read)} -->")


if __name__ == "__main__":
    main()
