"""`scheda quantize`: a model quantized by llama.cpp's own quantizer, as llama-quantize does it.

The work is `llama_model_quantize`, the function llama-quantize calls, through
llama-cpp-python's binding (the `eval` extra: nothing is compiled on the
default path). scheda sets the same parameters llama-quantize sets for the
same command line (its defaults, the file type, `--allow-requantize`, the
importance matrix and the metadata keys that name it), so llama.cpp's
per-tensor recipes apply unchanged: a Q4_K_M made here holds the tensor types
and bytes llama-quantize's would.

Each type is quantized in a process of its own (`python -m scheda.files.quantize`):
it reports every tensor as llama.cpp logs it (the progress bar) and can be
stopped at once, while the C++ call in progress could not be interrupted from
Python. It writes to a hidden temporary file beside the output; the file takes
its name only when it is whole (checked by reading its header back), and is
removed on any failure: an error, Ctrl-C, a full disk.

Before anything is written, a dry run of llama.cpp's own (the same recipe,
no data) says whether the type needs an importance matrix for this model and
how large the file will be, so a bad request costs nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheda.errors import EngineError, ModelFileError, UsageError, install_hint
from scheda.readers import gguf_types
from scheda.readers.imatrix import load_imatrix
from scheda.spec import ModelSpec

INSTALL = install_hint("eval")

# llama-quantize's QUANT_OPTIONS (tools/quantize/quantize.cpp), in its order: the name and
# what llama-quantize says of it (sizes and perplexity on Llama-3-8B).
ABOUT: dict[str, str] = {
    "Q1_0": "1.125 bpw quantization",
    "Q2_0": "2.25 bpw quantization (group 64)",
    "Q4_0": "4.34G, +0.4685 ppl @ Llama-3-8B",
    "Q4_1": "4.78G, +0.4511 ppl @ Llama-3-8B",
    "MXFP4_MOE": "MXFP4 MoE",
    "Q5_0": "5.21G, +0.1316 ppl @ Llama-3-8B",
    "Q5_1": "5.65G, +0.1062 ppl @ Llama-3-8B",
    "IQ2_XXS": "2.06 bpw quantization",
    "IQ2_XS": "2.31 bpw quantization",
    "IQ2_S": "2.5  bpw quantization",
    "IQ2_M": "2.7  bpw quantization",
    "IQ1_S": "1.56 bpw quantization",
    "IQ1_M": "1.75 bpw quantization",
    "TQ1_0": "1.69 bpw ternarization",
    "TQ2_0": "2.06 bpw ternarization",
    "Q2_K": "2.96G, +3.5199 ppl @ Llama-3-8B",
    "Q2_K_S": "2.96G, +3.1836 ppl @ Llama-3-8B",
    "IQ3_XXS": "3.06 bpw quantization",
    "IQ3_S": "3.44 bpw quantization",
    "IQ3_M": "3.66 bpw quantization mix",
    "IQ3_XS": "3.3 bpw quantization",
    "Q3_K_S": "3.41G, +1.6321 ppl @ Llama-3-8B",
    "Q3_K_M": "3.74G, +0.6569 ppl @ Llama-3-8B",
    "Q3_K_L": "4.03G, +0.5562 ppl @ Llama-3-8B",
    "IQ4_NL": "4.50 bpw non-linear quantization",
    "IQ4_XS": "4.25 bpw non-linear quantization",
    "Q4_K_S": "4.37G, +0.2689 ppl @ Llama-3-8B",
    "Q4_K_M": "4.58G, +0.1754 ppl @ Llama-3-8B",
    "Q5_K_S": "5.21G, +0.1049 ppl @ Llama-3-8B",
    "Q5_K_M": "5.33G, +0.0569 ppl @ Llama-3-8B",
    "Q6_K": "6.14G, +0.0217 ppl @ Llama-3-8B",
    "Q8_0": "7.96G, +0.0026 ppl @ Llama-3-8B",
    "F16": "14.00G, +0.0020 ppl @ Mistral-7B",
    "BF16": "14.00G, -0.0050 ppl @ Mistral-7B",
    "F32": "26.00G @ 7B",
}
# Each name with its llama_ftype, the `general.file_type` the readers know it by.
TYPES: dict[str, tuple[int, str]] = {
    name: (gguf_types.file_type_id(name), about) for name, about in ABOUT.items()
}
# llama-quantize's aliases: the K-quant without a size letter is its M mix.
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}
# Storage types that are not quantized: quantizing from these needs no --allow-requantize.
UNQUANTIZED = {"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"}
# The metadata llama-quantize adds when it uses an importance matrix (quantize.cpp).
IMATRIX_FILE_KEY = "quantize.imatrix.file"
IMATRIX_DATASET_KEY = "quantize.imatrix.dataset"
IMATRIX_ENTRIES_KEY = "quantize.imatrix.entries_count"
IMATRIX_CHUNKS_KEY = "quantize.imatrix.chunks_count"
WORKER_TIMEOUT_S = 24 * 3600
# A GGUF's metadata and alignment padding on top of its tensors, at most (the dry run
# counts tensors only); a few MiB for a 256k-token vocabulary.
HEADER_ALLOWANCE = 64 << 20


@dataclass
class Quantized:
    """One file written: where, which type, what it holds."""

    path: Path
    type: str
    size: int
    bits_per_weight: float | None
    tensors: int
    fallbacks: int  # tensors llama.cpp stored in another type: their rows do not fit the blocks
    seconds: float
    spec: ModelSpec
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "type": self.type,
            "size": self.size,
            "bits_per_weight": None
            if self.bits_per_weight is None
            else round(self.bits_per_weight, 4),
            "tensors": self.tensors,
            "fallbacks": self.fallbacks,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
            "spec": self.spec.to_dict(),
        }


def parse_types(text: str) -> list[str]:
    """`--to Q8_0,q4_k_m` as llama-quantize's names, in the order given, each once."""
    names = [t.strip().upper() for t in text.split(",") if t.strip()]
    if not names:
        raise UsageError("--to is empty: give a type, e.g. --to Q4_K_M (or several: Q8_0,Q4_K_M)")
    unknown = [n for n in names if n not in TYPES and n not in ALIASES]
    if unknown:
        raise UsageError(
            f"unknown type {unknown[0]!r}: choose from {', '.join(TYPES)} (llama-quantize's names)"
        )
    return list(dict.fromkeys(ALIASES.get(n, n) for n in names))


def output_stem(source: Path) -> str:
    """The name a quantized file starts with: the input's, less a type it already names.

    `SmolLM2-135M.Q4_1.gguf` gives `SmolLM2-135M`, so its Q8_0 is `SmolLM2-135M.Q8_0.gguf`.
    """
    stem = source.name if source.is_dir() else source.stem
    head, dot, last = stem.rpartition(".")
    if dot and head and (last.upper() in TYPES or last.upper() in ALIASES):
        return head
    return stem


def quantize(
    source: Path,
    types: list[str],
    output: Path | None = None,
    imatrix: Path | None = None,
    allow_requantize: bool = False,
    force: bool = False,
    threads: int | None = None,
    on_step: Callable[[str], None] = lambda _: None,
    on_tensor: Callable[[str, int, int, str], None] = lambda *_: None,
) -> list[Quantized]:
    """Quantize `source` (a GGUF file, or an HF folder written as GGUF first) to each type.

    Files go to `output` (default: beside the input) as `<stem>.<TYPE>.gguf`. Every
    check runs before any file is written: the types, the output names (an existing
    file needs `force`), `allow_requantize` for an input already quantized, and, in a
    dry run of llama.cpp's, the importance matrix a type needs and the disk space.
    `on_tensor(type, done, total, name)` follows llama.cpp through the tensors.
    """
    source = Path(source)
    if not source.exists():
        raise ModelFileError(f"{source}: no such file or folder")
    folder = (output or source.parent).expanduser()  # an HF folder's file goes beside it
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--output {folder} is a file: give a folder")
    if imatrix is not None and not Path(imatrix).is_file():
        raise UsageError(f"--imatrix {imatrix}: no such file")
    stem = output_stem(source)
    targets = {t: folder / f"{stem}.{t}.gguf" for t in types}
    for target in targets.values():
        if source.is_file() and target.exists() and target.resolve() == source.resolve():
            raise UsageError(f"{target} is the input itself: give another --output folder")
        if target.exists() and not force:
            raise UsageError(
                f"{target} exists: give another --output folder, or replace it (--force)"
            )
    if imatrix is not None:
        load_imatrix(Path(imatrix))  # a bad file fails here, not in the worker
    folder.mkdir(parents=True, exist_ok=True)
    with _gguf_input(source, folder, stem, on_step) as gguf_path:
        spec = _read_input(gguf_path)
        requantizing = sorted(set(spec.quantization) - UNQUANTIZED)
        if requantizing and not allow_requantize:
            raise UsageError(
                f"{source.name} is already quantized ({', '.join(requantizing)}): quantizing it "
                "again adds the new rounding to the old; say --allow-requantize to do it anyway"
            )
        plans = {}
        for t in types:
            on_step(f"checking {t} (a dry run of llama.cpp's recipe)")
            plans[t] = _run_worker(gguf_path, None, t, imatrix, allow_requantize, threads, None)
            if plans[t].get("needs_imatrix") and imatrix is None:
                raise UsageError(
                    f"{t} needs an importance matrix for this model (llama.cpp's rule for its "
                    "lowest-bit types): give one with --imatrix FILE, or choose a K-quant"
                )
        needed = sum(int(p.get("quant_size") or 0) + HEADER_ALLOWANCE for p in plans.values())
        _check_space(folder, needed)
        written = []
        for t in types:
            written.append(
                _write_one(
                    gguf_path, targets[t], t, imatrix, allow_requantize, threads, force, on_tensor
                )
            )
            if requantizing:
                written[-1].notes.append(
                    f"requantized from {', '.join(requantizing)}: the {t} file holds the "
                    "input's rounded values, rounded again"
                )
    return written


def _read_input(path: Path) -> ModelSpec:
    from scheda.readers import read_spec

    with path.open("rb") as f:
        if f.read(4) != gguf_types.MAGIC:
            raise ModelFileError(
                f"{path}: not a GGUF file (it does not start with GGUF's magic): give a .gguf "
                "file or an HF model folder"
            )
    return read_spec(path)


@contextlib.contextmanager
def _gguf_input(
    source: Path, folder: Path, stem: str, on_step: Callable[[str], None]
) -> Iterator[Path]:
    """The GGUF to quantize: the file itself, or an HF folder written as GGUF for the while."""
    if source.is_file():
        yield source
        return
    from scheda.files.gguf_writer import write_gguf

    temporary = folder / f".{stem}.{secrets.token_hex(4)}.source.gguf.part"
    try:
        on_step(f"writing {source.name} as GGUF (scheda's GGUF writer)")
        write_gguf(source, temporary)
        yield temporary
    finally:
        temporary.unlink(missing_ok=True)


def _check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        from scheda.units import size

        raise UsageError(
            f"not enough space in {folder}: the files need about {size(needed)}, "
            f"{size(free)} is free; free some, or give another --output folder"
        )


def _write_one(
    source: Path,
    target: Path,
    type_: str,
    imatrix: Path | None,
    allow_requantize: bool,
    threads: int | None,
    force: bool,
    on_tensor: Callable[[str, int, int, str], None],
) -> Quantized:
    """Quantize into a hidden file beside `target`; give it the name only when it is whole."""
    from scheda.readers import read_spec

    partial = target.parent / f".{target.name}.{secrets.token_hex(4)}.part"
    started = time.perf_counter()
    try:
        result = _run_worker(
            source, partial, type_, imatrix, allow_requantize, threads, lambda *a: on_tensor(*a)
        )
        try:
            spec = read_spec(partial)  # a file cut short (a full disk) fails here
        except ModelFileError as exc:
            raise EngineError(f"{type_}: the quantizer wrote a damaged file ({exc})") from exc
        if force:
            os.replace(partial, target)
        else:
            try:
                os.link(partial, target)  # never replaces a file made meanwhile
            except FileExistsError as exc:
                raise UsageError(f"{target} appeared meanwhile: replace it with --force") from exc
            partial.unlink()
    finally:
        partial.unlink(missing_ok=True)
    spec.path = str(target)
    return Quantized(
        path=target,
        type=type_,
        size=target.stat().st_size,
        bits_per_weight=spec.bits_per_weight,
        tensors=int(result.get("tensors") or 0),
        fallbacks=int(result.get("fallbacks") or 0),
        seconds=time.perf_counter() - started,
        spec=spec,
    )


# The parent: one worker process per run of the quantizer ------------------------------------


def _run_worker(
    source: Path,
    target: Path | None,
    type_: str,
    imatrix: Path | None,
    allow_requantize: bool,
    threads: int | None,
    on_tensor: Callable[[str, int, int, str], None] | None,
) -> dict[str, Any]:
    """Run the quantizer (or its dry run, without a target) in a child process.

    The child prints a JSON line per tensor and one at the end. Ctrl-C here kills it at
    once (the caller removes what it wrote).
    """
    job = {
        "source": str(source),
        "target": str(target) if target else None,
        "ftype": TYPES[type_][0],
        "imatrix": str(imatrix) if imatrix else None,
        "allow_requantize": allow_requantize,
        "threads": threads or 0,
    }
    command = [sys.executable, "-m", "scheda.files.quantize", json.dumps(job)]
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    final: dict[str, Any] = {}
    try:
        assert child.stdout is not None
        for line in child.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue  # anything else the library printed on stdout
            if "tensor" in message and on_tensor is not None:
                on_tensor(type_, message["tensor"], message["of"], message["name"])
            elif "done" in message:
                final = message
        _, stderr = child.communicate(timeout=WORKER_TIMEOUT_S)
    except BaseException:
        child.kill()  # Ctrl-C, a timeout: the quantizer stops now, not after its C++ call
        child.wait()
        raise
    if final.get("missing"):
        raise EngineError(
            f"quantizing needs llama-cpp-python, which is not installed: run {INSTALL}"
        )
    if child.returncode != 0 or not final.get("done"):
        raise EngineError(
            f"quantizing to {type_} failed: {_reason(final, stderr, child.returncode)}"
        )
    return final


def _reason(final: dict[str, Any], stderr: str, code: int) -> str:
    if final.get("error"):
        return str(final["error"])
    if code < 0:
        name = signal.Signals(-code).name
        if name == "SIGXFSZ":
            return "the file grew past this process's file size limit"
        return f"the quantizer was stopped ({name})"
    last = (stderr.strip().splitlines() or ["no message"])[-1]
    return last[:300]


# The worker: one call of llama_model_quantize in its own process ----------------------------

PROGRESS = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")
QUANT_SIZE = re.compile(r"quant size\s*=\s*([\d.]+) MiB")
FALLBACKS = re.compile(r"(\d+) of (\d+) tensor\(s\) required fallback quantization")
FAILED = re.compile(r"failed to quantize: (.*)")


def _worker(job: dict[str, Any]) -> int:
    # Ctrl-C stops this process at once: the parent removes the partial file. A file-size
    # limit fails the write (an error to report) instead of killing the process.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        import llama_cpp
    except ImportError:
        print(json.dumps({"done": False, "missing": "llama_cpp"}), flush=True)
        return 1
    state: dict[str, Any] = {"tensors": 0, "fallbacks": 0, "errors": [], "needs_imatrix": False}
    pending = [""]

    def on_log(level: int, text: bytes, _: Any) -> None:
        pending[0] += text.decode("utf-8", errors="replace")
        *lines, pending[0] = pending[0].split("\n")
        for line in lines:
            _read_log(level, line, state)

    callback = llama_cpp.llama_log_callback(on_log)
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = job["ftype"]
    params.allow_requantize = job["allow_requantize"]
    params.nthread = job["threads"]
    params.dry_run = job["target"] is None
    keep: list[Any] = []  # what the C structures point into lives until the call returns
    if job["imatrix"]:
        _set_imatrix(llama_cpp, params, Path(job["imatrix"]), job["imatrix"], keep)
    status = llama_cpp.llama_model_quantize(
        job["source"].encode(), (job["target"] or "").encode(), ctypes.byref(params)
    )
    _read_log(2, pending[0], state)
    error = state["errors"][-1] if state["errors"] else None
    print(
        json.dumps(
            {
                "done": status == 0,
                "error": None if status == 0 else (error or f"llama.cpp returned {status}"),
                "tensors": state["tensors"],
                "fallbacks": state["fallbacks"],
                "quant_size": state.get("quant_size"),
                "needs_imatrix": state["needs_imatrix"],
            }
        ),
        flush=True,
    )
    return 0 if status == 0 else 1


def _read_log(level: int, line: str, state: dict[str, Any]) -> None:
    """What llama.cpp's quantizer log says: a tensor begun, the sizes, a failure."""
    if match := PROGRESS.match(line):
        state["tensors"] = int(match[2])
        print(
            json.dumps({"tensor": int(match[1]), "of": int(match[2]), "name": match[3]}),
            flush=True,
        )
    elif match := QUANT_SIZE.search(line):
        state["quant_size"] = round(float(match[1]) * (1 << 20))
    elif match := FALLBACKS.search(line):
        state["fallbacks"] = int(match[1])
    elif match := FAILED.search(line):
        state["errors"].append(match[1].strip())
    elif "require an imatrix" in line or "requires an importance matrix" in line:
        state["needs_imatrix"] = True


def _set_imatrix(ll: Any, params: Any, path: Path, given: str, keep: list[Any]) -> None:
    """The importance matrix and the metadata keys that name it, as llama-quantize sets them."""
    import numpy as np

    matrix = load_imatrix(path)
    entries = (ll.llama_model_imatrix_data * (len(matrix.values) + 1))()
    for i, (name, values) in enumerate(matrix.values.items()):
        array = np.ascontiguousarray(values, dtype=np.float32)
        keep.append(array)
        entries[i].name = name.encode()
        entries[i].data = array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entries[i].size = array.size
    keep.append(entries)
    params.imatrix = entries
    overrides: list[tuple[str, str | int]] = [(IMATRIX_FILE_KEY, given)]
    if matrix.datasets:
        overrides.append((IMATRIX_DATASET_KEY, matrix.datasets[0]))
    overrides.append((IMATRIX_ENTRIES_KEY, len(matrix.values)))
    if matrix.chunks > 0:
        overrides.append((IMATRIX_CHUNKS_KEY, matrix.chunks))
    table = (ll.llama_model_kv_override * (len(overrides) + 1))()
    for i, (key, value) in enumerate(overrides):
        table[i].key = key.encode()
        if isinstance(value, str):
            table[i].tag = ll.LLAMA_KV_OVERRIDE_TYPE_STR
            table[i].value.val_str = value.encode()[:127]
        else:
            table[i].tag = ll.LLAMA_KV_OVERRIDE_TYPE_INT
            table[i].value.val_i64 = value
    keep.append(table)
    params.kv_overrides = table


if __name__ == "__main__":
    sys.exit(_worker(json.loads(sys.argv[1])))
