"""Regenerate the GGUF header table of docs/benchmarks.md.

    .venv/bin/python benchmarks/gguf_header.py [--rounds 5]

Two files: the embedded SmolLM2 GGUF (a 49,152-token vocabulary) and a
synthetic GGUF written here with the `gguf` package's writer into a temporary
folder, with Llama 3's tokenizer sizes (128,256 tokens and their types,
280,147 merges) and the 291 tensor names of an 8B Llama at tiny shapes. On
each, side by side in the same rounds: scheda's lazy header reader
(`read_header`), the whole spec (`read_gguf`), and `gguf.GGUFReader`, the
eager reader scheda used before. Then `scheda card` and `scheda fit` as fresh
processes: wall time and CPU time. Every figure is the median of its rounds;
the machine, the versions and the load average are printed with them.

The processes run as an installed package does, with their bytecode cached
(one warm-up run each writes it if the environment had switched that off).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import psutil

from scheda.readers.gguf_file import read_gguf
from scheda.readers.gguf_header import read_header
from scheda.readers.source import FileSource
from scheda.resolve import default_model_path

LLAMA3_TOKENS, LLAMA3_MERGES, LLAMA_LAYERS = 128_256, 280_147, 32
LAYER_TENSORS = (
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
)


def write_synthetic(path: Path) -> None:
    """A GGUF with Llama 3's tokenizer sizes and an 8B Llama's tensor names, tiny shapes."""
    import numpy as np
    from gguf import GGUFWriter

    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyzĠ"

    def word() -> str:  # lengths about a BPE vocabulary's: mostly 2-8 characters
        return "".join(rng.choice(letters) for _ in range(rng.randint(1, 10)))

    tokens = [f"{word()}{i}" for i in range(LLAMA3_TOKENS)]
    writer = GGUFWriter(path, "llama")
    writer.add_name("synthetic Llama 3 tokenizer")
    writer.add_block_count(LLAMA_LAYERS)
    writer.add_context_length(8192)
    writer.add_embedding_length(4096)
    writer.add_feed_forward_length(14336)
    writer.add_head_count(32)
    writer.add_head_count_kv(8)
    writer.add_rope_freq_base(500_000.0)
    writer.add_vocab_size(LLAMA3_TOKENS)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * LLAMA3_TOKENS)
    writer.add_token_merges([f"{word()} {word()}" for _ in range(LLAMA3_MERGES)])
    writer.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    names = [
        "token_embd.weight",
        *(f"blk.{i}.{t}.weight" for i in range(LLAMA_LAYERS) for t in LAYER_TENSORS),
        "output_norm.weight",
        "output.weight",
    ]
    for name in names:
        writer.add_tensor(name, np.zeros(32, dtype=np.float32))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def lazy_header(path: Path) -> tuple[int, int]:
    """scheda's header read: (requests, bytes) it cost."""
    with FileSource(path) as source:
        read_header(source)
    return source.requests, source.bytes_read


def eager_header(path: Path) -> None:
    from gguf import GGUFReader

    GGUFReader(path, "r")


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def compare_readers(path: Path, rounds: int) -> dict[str, float | int]:
    """Each round runs all three on the same file, so a slow spell falls on all alike."""
    requests, read = lazy_header(path)
    lazy, spec, eager = [], [], []
    for _ in range(rounds):
        lazy.append(timed(lambda: lazy_header(path)))
        spec.append(timed(lambda: read_gguf(path)))
        eager.append(timed(lambda: eager_header(path)))
    return {
        "lazy": statistics.median(lazy),
        "spec": statistics.median(spec),
        "eager": statistics.median(eager),
        "requests": requests,
        "bytes": read,
    }


def process_times(args: list[str], rounds: int) -> tuple[float, float, float]:
    """`scheda ARGS` as fresh processes, output discarded: the median and the fastest wall
    time, and the median CPU time (user + system), which a busy machine inflates less."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: bytecode cached
    command = [sys.executable, "-m", "scheda", *args]
    subprocess.run(command, stdout=subprocess.DEVNULL, env=env, check=True)  # warm-up
    walls, cpus = [], []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, env=env, check=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls), min(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        synthetic = Path(folder) / "llama3-tokenizer.gguf"
        write_synthetic(synthetic)
        files = {
            "embedded SmolLM2 (49,152 tokens)": default_model_path(),
            "synthetic, Llama 3 sizes (128,256 tokens)": synthetic,
        }
        print(
            "| file | header | scheda read_header | scheda read_gguf (spec) "
            "| gguf.GGUFReader | GGUFReader ÷ read_header | reads |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for label, path in files.items():
            r = compare_readers(path, rounds)
            with FileSource(path) as source:
                header = read_header(source).data_offset
            print(
                f"| {label} | {header / 2**20:.1f} MiB | {r['lazy'] * 1000:.1f} ms "
                f"| {r['spec'] * 1000:.1f} ms | {r['eager']:.2f} s "
                f"| {r['eager'] / r['lazy']:.0f}x | {r['requests']} of "
                f"{int(r['bytes']) / 2**20:.1f} MiB |"
            )
        print()
        print("| command (a fresh process) | wall time, median | fastest | CPU time, median |")
        print("| --- | --- | --- | --- |")
        for args in (["card", "default"], ["fit", "default"], ["card", str(synthetic)]):
            shown = " ".join(args).replace(str(synthetic), "SYNTHETIC.gguf")
            wall, fastest, cpu = process_times(args, rounds)
            print(f"| `scheda {shown}` | {wall:.3f} s | {fastest:.3f} s | {cpu:.3f} s |")
    memory = psutil.virtual_memory().total / 2**30
    print()
    print(
        f"Machine: {psutil.cpu_count(logical=False)} cores, {memory:.0f} GiB, "
        f"{platform.machine()}; Python {platform.python_version()}, gguf {version('gguf')}, "
        f"typer {version('typer')}; {rounds} rounds; load average "
        f"{load[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    )


if __name__ == "__main__":
    main()
