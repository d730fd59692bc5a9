"""`scheda quantize`: llama.cpp's real quantizer on the embedded model, and what it must refuse.

The embedded model is Q4_1, so every run here requantizes it (`allow_requantize`),
as the comparison's F16 reference does. A file made here is the one llama-quantize
makes: the same function with the same parameters, so the same bytes whatever the
thread count; and an HF folder written by scheda's GGUF writer holds, tensor for
tensor, the bytes llama.cpp's F16 of the same weights holds.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from scheda.errors import UsageError
from scheda.files.quantize import (
    ALIASES,
    IMATRIX_ENTRIES_KEY,
    IMATRIX_FILE_KEY,
    TYPES,
    output_stem,
    parse_types,
    quantize,
)
from scheda.readers import gguf_types, read_spec
from scheda.readers.imatrix import load_imatrix

pytestmark = pytest.mark.slow

STEM = "SmolLM2-135M-Instruct"


def _scheda(*args: str, cwd: Path | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheda", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        **kwargs,
    )


def _field(reader: gguf.GGUFReader, key: str) -> object:
    f = reader.fields[key]
    value = f.parts[f.data[0]]
    return bytes(value).decode() if f.types[0] == gguf.GGUFValueType.STRING else int(value[0])


def test_types_are_llama_quantizes_names() -> None:
    assert parse_types("q8_0, Q4_K_M,q8_0") == ["Q8_0", "Q4_K_M"]
    assert parse_types("Q4_K") == ["Q4_K_M"]  # llama-quantize's alias
    for name in ("F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q4_0"):
        assert name in TYPES
    assert set(ALIASES.values()) <= set(TYPES)
    # Each type's llama_ftype is the readers' (gguf_types.FILE_TYPES), not a table of its own.
    assert TYPES["Q4_K_M"][0] == 15 and TYPES["F32"][0] == 0 and TYPES["BF16"][0] == 32
    for name, (ftype, _) in TYPES.items():
        assert gguf_types.FILE_TYPES[ftype] in (f"MOSTLY_{name}", f"ALL_{name}"), name
    with pytest.raises(UsageError, match="unknown type 'Q9_9'"):
        parse_types("Q8_0,Q9_9")
    assert output_stem(Path(f"{STEM}.Q4_1.gguf")) == STEM
    assert output_stem(Path("model.v2.gguf")) == "model.v2"


def test_q8_0_is_llama_cpps_file_whatever_the_threads(smollm_path: Path, tmp_path: Path) -> None:
    one = quantize(smollm_path, ["Q8_0"], tmp_path / "a", allow_requantize=True, threads=1)[0]
    two = quantize(smollm_path, ["Q8_0"], tmp_path / "b", allow_requantize=True, threads=2)[0]
    assert one.path == tmp_path / "a" / f"{STEM}.Q8_0.gguf"
    assert one.path.read_bytes() == two.path.read_bytes()
    spec = read_spec(one.path)
    assert spec.file_type == "Q8_0"
    assert set(spec.quantization) == {"Q8_0", "F32"}  # norms stay F32, as llama.cpp keeps them
    assert one.tensors == 272 and one.size == one.path.stat().st_size
    assert one.bits_per_weight == pytest.approx(spec.bits_per_weight)
    assert any("requantized from Q4_1" in note for note in one.notes)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [one.path.name]  # no temp file


def test_cli_shows_the_card_size_and_fallbacks(tmp_path: Path) -> None:
    done = _scheda(
        "quantize", "default", "--to", "Q4_K_M", "-o", str(tmp_path), "--allow-requantize"
    )
    assert done.returncode == 0, done.stderr
    written = tmp_path / f"{STEM}.Q4_K_M.gguf"
    assert written.is_file()
    assert "Q4_K_M" in done.stdout and "Parameters" in done.stdout  # the card
    assert f"wrote {written}" in done.stdout and "bits per weight" in done.stdout
    # 576 columns do not divide into 256-weight K-quant blocks: llama.cpp falls back.
    assert "kept another type" in done.stdout
    assert read_spec(written).file_type == "Q4_K_M"


@pytest.mark.slow
def test_an_hf_folder_is_written_as_llama_cpps_f16_first(
    smollm_hf: Path, smollm_quants: dict[str, Path], tmp_path: Path
) -> None:
    from scheda.files.gguf_writer import write_gguf

    written = write_gguf(smollm_hf, tmp_path / "writer.gguf")
    reader = gguf.GGUFReader(str(written))  # a parse takes seconds: one per file
    mine = {t.name: t for t in reader.tensors}
    theirs = {t.name: t for t in gguf.GGUFReader(str(smollm_quants["F16"])).tensors}
    assert mine.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert mine[name].tensor_type == tensor.tensor_type, name
        assert np.array_equal(mine[name].data, tensor.data), name
    assert _field(reader, "tokenizer.ggml.pre") == "smollm"
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"

    out = quantize(smollm_hf, ["Q8_0"], tmp_path / "out")[0]  # F16 in: nothing to allow
    assert out.path.name == "smollm-hf.Q8_0.gguf"
    assert read_spec(out.path).file_type == "Q8_0"
    assert [p.name for p in (tmp_path / "out").iterdir()] == [out.path.name]


def _imatrix(model: Path, path: Path) -> Path:
    """A GGUF importance matrix as llama-imatrix writes one, every column equally important."""
    writer = gguf.GGUFWriter(str(path), arch="imatrix")
    writer.add_type("imatrix")
    writer.add_array("imatrix.datasets", ["uniform"])
    writer.add_uint32("imatrix.chunk_count", 1)
    writer.add_uint32("imatrix.chunk_size", 512)
    for t in gguf.GGUFReader(str(model)).tensors:
        if len(t.shape) == 2 and t.name != "token_embd.weight":
            writer.add_tensor(f"{t.name}.in_sum2", np.full((1, int(t.shape[0])), 512, np.float32))
            writer.add_tensor(f"{t.name}.counts", np.full((1, 1), 512, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_type_that_needs_an_imatrix_takes_one(smollm_path: Path, tmp_path: Path) -> None:
    matrix = _imatrix(smollm_path, tmp_path / "uniform.imatrix.gguf")
    loaded = load_imatrix(matrix)
    assert len(loaded.values) == 210 and loaded.datasets == ["uniform"] and loaded.chunks == 1
    assert all(np.all(v == 1.0) for v in loaded.values.values())  # sums over counts

    with pytest.raises(UsageError, match="Q2_K_S needs an importance matrix"):
        quantize(smollm_path, ["Q2_K_S"], tmp_path / "none", allow_requantize=True)
    assert not any((tmp_path / "none").iterdir())
    out = quantize(
        smollm_path, ["Q2_K_S"], tmp_path / "with", imatrix=matrix, allow_requantize=True
    )[0]
    reader = gguf.GGUFReader(str(out.path))
    assert _field(reader, IMATRIX_FILE_KEY) == str(matrix)  # as llama-quantize records it
    assert _field(reader, IMATRIX_ENTRIES_KEY) == 210
    assert read_spec(out.path).file_type == "Q2_K_S"


def test_the_legacy_imatrix_format_reads_too(tmp_path: Path) -> None:
    path = tmp_path / "legacy.dat"
    name = b"blk.0.attn_q.weight"
    values = np.array([2.0, 4.0, 6.0], np.float32)
    body = np.array([1, len(name)], np.int32).tobytes() + name
    body += np.array([2, 3], np.int32).tobytes() + values.tobytes()  # ncall 2, 3 values
    body += np.array([7, 4], np.int32).tobytes() + b"wiki"
    path.write_bytes(body)
    loaded = load_imatrix(path)
    assert np.array_equal(loaded.values["blk.0.attn_q.weight"], [1.0, 2.0, 3.0])
    assert loaded.chunks == 7 and loaded.datasets == ["wiki"]


BAD = {
    "unknown type": (["--to", "Q9_9"], "unknown type 'Q9_9'"),
    "needs an imatrix": (["--to", "IQ2_XS", "--allow-requantize"], "needs an importance matrix"),
    "already quantized": (["--to", "Q8_0"], "already quantized (Q4_1, Q8_0)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_requests_are_one_line_and_write_nothing(case: str, tmp_path: Path) -> None:
    args, message = BAD[case]
    done = _scheda("quantize", "default", *args, "-o", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_no_gguf_and_an_existing_output(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a model")
    done = _scheda("quantize", str(fake), "--to", "Q8_0")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "not a GGUF file" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]

    existing = tmp_path / f"{STEM}.Q8_0.gguf"
    existing.write_bytes(b"keep me")
    done = _scheda("quantize", "default", "--to", "Q8_0", "-o", str(tmp_path), "--allow-requantize")
    assert done.returncode == 2 and "exists" in done.stderr and "--force" in done.stderr
    assert existing.read_bytes() == b"keep me"


def test_ctrl_c_leaves_no_half_written_file(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "scheda", "quantize", "default", "--to", "F32"]
    # A child inherits an ignored SIGINT, and Python then leaves Ctrl-C ignored: a suite run
    # as a background job of a script (which ignores it) would see the quantizer finish.
    # Started as from a terminal, where Ctrl-C is heard.
    heard = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        child = subprocess.Popen(
            [*command, "-o", str(tmp_path), "--allow-requantize"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, heard)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".*.part")):  # the quantizer has begun writing
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the quantizer never started writing"
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr  # Ctrl-C's exit status
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_leaves_no_half_written_file(tmp_path: Path) -> None:
    def small_disk() -> None:  # files may not grow past 20 MB: as a disk that fills up
        resource.setrlimit(resource.RLIMIT_FSIZE, (20 << 20, 20 << 20))

    done = _scheda(
        "quantize",
        "default",
        "--to",
        "F16",
        "-o",
        str(tmp_path),
        "--allow-requantize",
        preexec_fn=small_disk,
    )
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "quantizing to F16 failed" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []
