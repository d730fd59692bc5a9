"""A GGUF file to a Hugging Face safetensors folder, so the same weights run on both engines.

transformers reads the GGUF (config, tokenizer, chat template and tensors),
dequantizing every quantized tensor (Q4_1, Q8_0, K-quants...) to floating
point; scheda then saves the model, the tokenizer and the generation config
with `save_pretrained`, and writes a short model card (README.md) that keeps
the GGUF's licence. Nothing is re-quantized: the folder holds the very values
the GGUF's blocks decode to, rounded to the chosen precision.

Precision: float16 by default. A quantized block decodes to `scale × q + min`
with float16 scales, which float32 holds exactly; float16 rounds it by at most
2^-11 of its value, a hundred times finer than the 4- or 8-bit steps the GGUF
already took, at half float32's size (270 MB instead of 540 MB for the
embedded 135M model). `dtype="float32"` keeps the decoded values bit for bit;
bfloat16 is for weights beyond float16's range (65,504), which scheda checks.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from scheda.errors import EngineError, ModelFileError, UsageError, install_hint

DTYPES = ("float16", "bfloat16", "float32")
DEFAULT_DTYPE = "float16"
INSTALL = install_hint("transformers")
# What `save_pretrained` writes for the weights; stale ones would be counted twice.
WEIGHT_GLOBS = ("*.safetensors", "model.safetensors.index.json")


def convert(
    gguf_path: Path,
    out: Path,
    dtype: str = DEFAULT_DTYPE,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Convert a GGUF file into an HF model folder at `out`; return `out`.

    `dtype` is the precision of the saved weights: "float16" (default),
    "bfloat16" or "float32" (the dequantized values exactly). `out` must be
    missing or empty unless `overwrite` is true, in which case the files the
    conversion writes replace theirs (other files stay). `progress` shows
    Rich progress on stderr for the slow steps (reading the GGUF,
    dequantizing the tensors, writing). Every failure is one `SchedaError`
    line: ModelFileError for a file that is not a GGUF transformers can read,
    UsageError for a bad `out` or `dtype`, EngineError when transformers is
    missing.
    """
    gguf_path, out = Path(gguf_path), Path(out)
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    _check_input(gguf_path)
    _check_output(out, overwrite)
    from scheda.readers import read_spec

    spec = read_spec(gguf_path)  # scheda's own validating reader: no tensor is loaded
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise EngineError(
            f"converting a GGUF needs {exc.name}, which is not installed: run {INSTALL}"
        ) from exc

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    with _steps(progress) as step, _header_read_once():
        step("Reading the tokenizer from the GGUF")
        tokenizer = _load(gguf_path, spec.architecture, transformers.AutoTokenizer)
        step("Reading the model from the GGUF")
        model = _load(
            gguf_path,
            spec.architecture,
            transformers.AutoModelForCausalLM,
            dtype=getattr(torch, dtype),
        )
        _drop_gguf_quantizer(model)
        if dtype == "float16":
            _check_float16_range(model, torch)
        step(f"Writing {dtype} safetensors")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            # Written beside `out` first, so a failed conversion leaves no half folder.
            with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
                staging = Path(tmp)
                model.save_pretrained(staging, safe_serialization=True)
                tokenizer.save_pretrained(staging)
                (staging / "README.md").write_text(_model_card(gguf_path, spec, dtype))
                _move_into(staging, out)
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return out


@contextlib.contextmanager
def _header_read_once() -> Iterator[None]:
    """One parse of the GGUF for the three `from_pretrained` calls.

    transformers reads the file with gguf's `GGUFReader` for the config, again for the
    tokenizer and again for the tensors; a parse walks every metadata field (the 49k-token
    vocabulary and its merges: 3 s of the embedded model's conversion, each time). A reader
    only reads after it is made, so one per path serves all three. Where transformers stops
    asking `gguf.GGUFReader`, this changes nothing but the time.
    """
    import gguf

    module: Any = gguf  # its reader class is replaced for the duration
    original = module.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    module.GGUFReader = reader
    try:
        yield
    finally:
        module.GGUFReader = original


def _check_input(path: Path) -> None:
    if path.is_dir():
        raise UsageError(f"{path} is a folder: `convert` takes a .gguf file")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelFileError(f"{path}: not a GGUF file (it does not start with GGUF's magic)")


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file: give a folder to write the HF model into")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} is not empty: give a new folder, or overwrite it (--overwrite)")


def _load(path: Path, architecture: str | None, cls: Any, **options: Any) -> Any:
    """One `from_pretrained` on the GGUF, its failures as one line."""
    try:
        return cls.from_pretrained(
            str(path.parent), gguf_file=path.name, local_files_only=True, **options
        )
    except Exception as exc:  # transformers' GGUF reader raises many kinds; each is one line here
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "not supported" in first:
            raise ModelFileError(
                f"{path}: transformers cannot read the {architecture} architecture from a GGUF "
                f"(it reads {', '.join(_readable_architectures())}): run it with llama.cpp"
            ) from exc
        raise ModelFileError(f"{path}: transformers cannot convert this GGUF ({first})") from exc


def _readable_architectures() -> list[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]


def _drop_gguf_quantizer(model: Any) -> None:
    """The tensors are dequantized already; forget the GGUF "quantization" so the model saves."""
    model.hf_quantizer = None  # `is_quantized` follows it
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _check_float16_range(model: Any, torch: Any) -> None:
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UsageError(
                f"{name} holds values beyond float16's range: convert with dtype bfloat16"
                " or float32"
            )


def _model_card(gguf_path: Path, spec: Any, dtype: str) -> str:
    front = ["---", "library_name: transformers"]
    if spec.licence:
        front.append(f"license: {_yaml_scalar(spec.licence)}")
    front += ["tags:", "- scheda-convert", "---", ""]
    body = [
        f"# {spec.name}",
        "",
        f"Converted by `scheda convert` from `{gguf_path.name}`"
        f" ({spec.file_type or 'GGUF'}): the GGUF's tensors dequantized by transformers"
        f" and saved as {dtype} safetensors, with its tokenizer and chat template.",
        "",
    ]
    return "\n".join(front + body)


def _yaml_scalar(text: str) -> str:
    import json

    return json.dumps(text)  # a JSON string is a valid YAML scalar, quotes and all


def _move_into(staging: Path, out: Path) -> None:
    """Move the written files into `out`, replacing theirs and any stale weight files."""
    out.mkdir(parents=True, exist_ok=True)
    for pattern in WEIGHT_GLOBS:
        for stale in out.glob(pattern):
            stale.unlink()
    for item in staging.iterdir():
        target = out / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        shutil.move(str(item), target)


@contextlib.contextmanager
def _steps(show: bool) -> Iterator[Callable[[str], None]]:
    """Rich progress on stderr (or nothing): a line per step, a bar while dequantizing.

    transformers draws its GGUF bar with tqdm directly, past its own switch for
    progress bars, so scheda swaps that module's `tqdm` for the duration.
    """
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    progress = None
    if show:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=Console(stderr=True),
            transient=True,
        )
    current: list[Any] = []

    def step(description: str) -> None:
        if progress is not None:
            if current:
                progress.update(current[-1], completed=1, total=1)
            current.append(progress.add_task(description, total=None))

    def bar(iterable: Any, *args: Any, desc: str | None = None, **kwargs: Any) -> Iterator[Any]:
        items = list(iterable)
        task = None
        if progress is not None:
            task = progress.add_task("Dequantizing the tensors", total=len(items))
        for item in items:
            yield item
            if progress is not None and task is not None:
                progress.advance(task)

    original = getattr(gguf_utils, "tqdm", None)
    if original is not None:
        gguf_utils.tqdm = bar  # type: ignore[attr-defined]
    try:
        if progress is not None:
            with progress:
                yield step
        else:
            yield step
    finally:
        if original is not None:
            gguf_utils.tqdm = original  # type: ignore[attr-defined]
