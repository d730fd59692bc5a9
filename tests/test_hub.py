"""The Hub without downloading the weights, and `scheda pull` of only what fits.

Every test talks to the test Hub on loopback (tests/hub.py) through
`huggingface_hub`'s own client: the listing, resolve URLs with the headers the
client checks, redirects to a storage host, range requests. The files are the
real embedded GGUF (and the same model requantized to Q8_0 and split in two
parts) and the real MiniLM folder, so a remote card must equal the local one
field for field, and a pulled file must be byte for byte the one served.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scheda.errors import (
    HubAccessError,
    HubError,
    ModelFileError,
    ModelNotFoundError,
    PullRefusedError,
)
from scheda.files.pull import plan, pull
from scheda.formulas import hardware
from scheda.formulas.fit_report import file_fits, fit_report
from scheda.readers import gguf_files
from scheda.readers.gguf_header import read_header
from scheda.readers.hf_folder import LocalFolder, read_safetensors_header
from scheda.readers.source import BLOCK, FileSource
from scheda.resolve import locate, resolve
from scheda.spec import ModelSpec
from tests.conftest import GGUF_REPO, MINILM_REPO, SPLIT_REPO
from tests.hub import Hub

Q4 = "SmolLM2-135M-Instruct.Q4_1.gguf"
Q8 = "SmolLM2-135M-Instruct.Q8_0.gguf"


def _same(remote: ModelSpec, local: ModelSpec, besides: tuple[str, ...] = ()) -> None:
    """Every field equal but the path (a reference on the Hub) and the read's record."""
    a, b = remote.to_dict(), local.to_dict()
    skip = {"path", "remote", *besides}
    assert {k: a[k] for k in a if k not in skip} == {k: b[k] for k in b if k not in skip}


def _header_bytes(path: Path) -> int:
    """Where a GGUF's tensor data starts: its metadata and tensor table, padded."""
    with FileSource(path) as source:
        return read_header(source).data_offset


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _storage_gets(hub: Hub) -> list[tuple[str, str, str | None]]:
    """Requests for file bytes on the storage host (not the Hub's own routes)."""
    return [r for r in hub.requests() if r[0] == "GET" and len(r[1].strip("/")) == 64]


def _downloads(hub: Hub) -> list[tuple[str, str, str | None]]:
    """Requests for a whole file, or the rest of one: a download, not a header's range."""
    return [r for r in _storage_gets(hub) if r[2] is None or r[2].endswith("-")]


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-7b-instruct-q8_0-00001-of-00002.gguf", "Q8_0"),
        ("gemma-3-4b-it-UD-IQ2_XXS.gguf", "IQ2_XXS"),
        ("BF16/model-bf16-00002-of-00003.gguf", "BF16"),
        ("ggml-model-f16.gguf", "F16"),
        ("mmproj.gguf", None),
    ],
)
def test_the_quantization_a_name_tells(name: str, quant: str | None) -> None:
    assert gguf_files.quant_of(name) == quant


def test_split_parts_group_under_the_first_and_tags_pick() -> None:
    sizes = {
        "m-Q4_K_M.gguf": 10,
        "m-Q8_0-00001-of-00002.gguf": 20,
        "m-Q8_0-00002-of-00002.gguf": 30,
        "m-F16-00001-of-00002.gguf": 40,  # its second part is missing: not a model
        "README.md": 1,
    }
    models = gguf_files.ggufs(sizes)
    assert [(m.file, m.size, m.quant, len(m.parts)) for m in models] == [
        ("m-Q4_K_M.gguf", 10, "Q4_K_M", 1),
        ("m-Q8_0-00001-of-00002.gguf", 50, "Q8_0", 2),
    ]
    assert gguf_files.pick(models, "o/m", "q8_0", None).size == 50  # case-insensitive
    assert gguf_files.pick(models, "o/m", None, None).quant == "Q4_K_M"  # llama.cpp's default
    assert gguf_files.pick(models, "o/m", None, "m-Q8_0-00002-of-00002.gguf").quant == "Q8_0"
    with pytest.raises(ModelNotFoundError, match="no Q2_K file: tags Q4_K_M, Q8_0"):
        gguf_files.pick(models, "o/m", "Q2_K", None)


# -- the remote card and fit -----------------------------------------------------------------


@pytest.mark.hub
def test_remote_gguf_card_and_fit_equal_the_local_ones(online_hub: Hub, smollm_path: Path) -> None:
    remote, local = resolve(f"{GGUF_REPO}:q4_1"), resolve(str(smollm_path))
    _same(remote, local)
    assert remote.path == f"{GGUF_REPO}:Q4_1"
    devices = hardware.all_devices()
    fits = [fit_report(s, 8192, 1, devices).to_dict() for s in (remote, local)]
    for fit in fits:
        del fit["remote"], fit["files"]  # the remote one's own: what the read took, the files
    assert fits[0] == fits[1]
    read = remote.remote
    assert read is not None and read.files_read == [Q4]
    # The goal: the metadata's size plus at most 1 MiB, in 1 MiB range requests.
    assert read.bytes <= _header_bytes(smollm_path) + BLOCK
    assert read.requests == 1 + -(-read.bytes // BLOCK)  # the listing, then each block
    q8_source = online_hub.repos[GGUF_REPO].files[Q8].source
    assert isinstance(q8_source, Path)  # the repository serves a file from disk
    assert [(g.file, g.quant, g.size) for g in read.ggufs] == [
        (Q4, "Q4_1", smollm_path.stat().st_size),
        (Q8, "Q8_0", q8_source.stat().st_size),
    ]
    # Every byte of the file that was read was asked for by range; none of its tensors.
    ranges = [r[2] for r in _storage_gets(online_hub)]
    assert ranges and all(r and r.startswith("bytes=") for r in ranges)


@pytest.mark.hub
def test_remote_safetensors_card_equals_the_folder_on_disk(
    online_hub: Hub, minilm_path: Path, tmp_path: Path
) -> None:
    # The same files in a folder named as the repository, as `hf download --local-dir` makes.
    folder = tmp_path / "all-MiniLM-L6-v2"
    folder.mkdir()
    for item in minilm_path.iterdir():
        (folder / item.name).symlink_to(item)
    remote = resolve(MINILM_REPO)
    local = resolve(str(folder))
    _same(remote, local)
    assert remote.parameters == 22_713_216 and remote.path == MINILM_REPO
    read = remote.remote
    assert read is not None and "model.safetensors" in read.files_read
    # Two range requests for the safetensors file (the one LFS file read): its length,
    # then its JSON header.
    header = [r[2] for r in _storage_gets(online_hub)]
    assert header == ["bytes=0-7", f"bytes=8-{7 + _json_length(minilm_path)}"]
    small = sum((minilm_path / f).stat().st_size for f in ("config.json", "tokenizer_config.json"))
    readme = min(16384, (minilm_path / "README.md").stat().st_size)
    assert read.bytes == small + 8 + _json_length(minilm_path) + 16384 + readme
    assert read.requests == 1 + 2 + 4  # listing; safetensors; config, tokenizer, card, its config


def _json_length(folder: Path) -> int:
    with (folder / "model.safetensors").open("rb") as f:
        return int.from_bytes(f.read(8), "little")


@pytest.mark.hub
def test_a_split_gguf_reads_as_one_model(
    online_hub: Hub, smollm_path: Path, gguf_variants: dict[str, Path]
) -> None:
    first = next(p for n, p in gguf_variants.items() if "-00001-of-" in n)
    whole = resolve(str(smollm_path))
    local = resolve(str(first))
    _same(local, whole, besides=("file_size", "file_bits_per_parameter"))
    assert local.file_size == sum(p.stat().st_size for n, p in gguf_variants.items() if "-of-" in n)
    remote = resolve(SPLIT_REPO)  # the repository's only model
    _same(remote, local)
    assert remote.remote is not None and len(remote.remote.files_read) == 2
    second = next(p for n, p in gguf_variants.items() if "-00002-of-" in n)
    with pytest.raises(ModelFileError, match="part 2 of a split GGUF: give the first part"):
        resolve(str(second))


@pytest.mark.hub
def test_the_file_list_judges_each_quantization(online_hub: Hub) -> None:
    """The Q8_0 file's need, scaled from the Q4_1 header by size, is the one its own
    header gives (the same architecture, so the same cache and buffers)."""
    t4, host = hardware.find("t4")[0], hardware.host()
    from_q4 = resolve(f"{GGUF_REPO}:Q4_1")
    from_q8 = resolve(f"{GGUF_REPO}:Q8_0")
    assert from_q4.remote is not None and from_q8.remote is not None
    scaled = file_fits(from_q4, from_q4.remote.ggufs, 2048, 1, [t4, host])
    exact = file_fits(from_q8, from_q8.remote.ggufs, 2048, 1, [t4, host])
    assert [f.read for f in scaled] == [True, False] and [f.read for f in exact] == [False, True]
    assert abs(scaled[1].total - exact[1].total) < 64 * 1024
    assert scaled[0].fits == {"t4": True, "host": True}
    report = fit_report(from_q4, 2048, 1, [t4], [host, t4]).to_dict()
    assert [f["quant"] for f in report["files"]] == ["Q4_1", "Q8_0"]
    assert report["remote"]["repo"] == GGUF_REPO


@pytest.mark.hub
def test_a_server_without_ranges_is_refused(online_hub: Hub) -> None:
    online_hub.no_ranges = True
    with pytest.raises(HubError, match="does not serve byte ranges"):
        resolve(f"{GGUF_REPO}:Q4_1")


@pytest.mark.hub
def test_unknown_repository_and_tag(online_hub: Hub) -> None:
    with pytest.raises(ModelNotFoundError, match="no such repository on the Hub"):
        resolve("nobody/nothing")
    with pytest.raises(ModelNotFoundError, match="has no Q2_K file: tags Q4_1, Q8_0"):
        resolve(f"{GGUF_REPO}:Q2_K")


def test_offline_gives_the_not_found_line() -> None:
    """conftest keeps HF_HUB_OFFLINE=1: scheda never reaches out, and says so."""
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE is set"):
        resolve(GGUF_REPO)


# -- gated and private -----------------------------------------------------------------------


@pytest.mark.hub
def test_a_gated_repository_says_which_token_and_what_to_do(
    online_hub: Hub, smollm_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    online_hub.add("meta-test/Gated-GGUF", {Q4: smollm_path}, gated=True)
    with pytest.raises(HubAccessError, match=r"is gated .*no token was sent: set HF_TOKEN"):
        resolve("meta-test/Gated-GGUF")
    monkeypatch.setenv("HF_TOKEN", "hf_not_granted")
    with pytest.raises(HubAccessError, match="the token in HF_TOKEN was sent, and its account"):
        resolve("meta-test/Gated-GGUF")
    with pytest.raises(HubAccessError, match="is gated"):
        plan("meta-test/Gated-GGUF")  # refused before any byte
    assert not _storage_gets(online_hub)
    online_hub.tokens.add("hf_not_granted")
    assert resolve("meta-test/Gated-GGUF").parameters == 134_515_008


@pytest.mark.hub
def test_a_private_repository_without_a_token(online_hub: Hub, smollm_path: Path) -> None:
    online_hub.add("someone/Private-GGUF", {Q4: smollm_path}, private=True)
    with pytest.raises(HubAccessError, match=r"a private one \(401\): no token was sent"):
        resolve("someone/Private-GGUF")


# -- pull ------------------------------------------------------------------------------------


@pytest.mark.hub
def test_pull_then_every_command_finds_it_offline(
    online_hub: Hub, smollm_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from scheda.engines import choose

    pulled = pull(plan(f"{GGUF_REPO}:Q4_1"))
    assert pulled.reference == f"{GGUF_REPO}:Q4_1" and pulled.files == [Q4]
    assert pulled.path.name == Q4 and _sha256(pulled.path) == _sha256(smollm_path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert locate(f"{GGUF_REPO}:q4_1") == pulled.path
    assert choose(f"{GGUF_REPO}:Q4_1") == ("llama.cpp", pulled.path)
    _same(resolve(f"{GGUF_REPO}:Q4_1"), resolve(str(smollm_path)))
    # Another quantization is not here, and offline it is not read on the Hub either.
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE is set"):
        locate(f"{GGUF_REPO}:Q8_0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert pull(plan(f"{GGUF_REPO}:Q4_1")).files == []  # already there: nothing fetched


@pytest.mark.hub
def test_pull_of_an_hf_repository(
    online_hub: Hub, minilm_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    pulled = pull(plan(MINILM_REPO))
    assert (pulled.path / "model.safetensors").is_file()
    assert "config.json" in pulled.files and "1_Pooling/config.json" in pulled.files
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    spec = resolve(MINILM_REPO)
    assert spec.name == "all-MiniLM-L6-v2" and spec.parameters == 22_713_216


@pytest.mark.hub
def test_what_will_not_fit_is_refused_with_what_would(online_hub: Hub) -> None:
    budget = hardware.custom(0.23)  # 235 MiB: the Q4_1 file fits at 4,096, the Q8_0 does not
    refused = plan(f"{GGUF_REPO}:Q8_0", device=budget)
    assert not refused.fits
    with pytest.raises(PullRefusedError) as caught:
        pull(refused)
    message = str(caught.value)
    assert "needs 260.7 MiB at context 4,096" in message and "235.5 MiB usable" in message
    assert "Would fit: Q4_1 (93.8 MiB, needs 216.4 MiB)" in message
    assert "--force pulls it anyway" in message and "\n" not in message
    assert not _downloads(online_hub)  # refused before the download: its header only
    forced = pull(refused, force=True)
    assert forced.path.name == Q8


@pytest.mark.hub
def test_a_dropped_connection_resumes_and_verifies(online_hub: Hub, smollm_path: Path) -> None:
    online_hub.drop[Q4] = 40_000_000  # the connection closes after 40 MB, once
    pulled = pull(plan(f"{GGUF_REPO}:Q4_1"))
    resumed = [r[2] for r in _downloads(online_hub) if r[2]]
    assert len(resumed) == 1 and 0 < int(resumed[0][6:-1]) <= 40_000_000
    assert _sha256(pulled.path) == _sha256(smollm_path)


@pytest.mark.hub
def test_an_interrupted_pull_continues_where_it_stopped(online_hub: Hub, smollm_path: Path) -> None:
    size = smollm_path.stat().st_size

    def interrupt(done: int, total: int) -> None:
        if done > total // 2:
            raise KeyboardInterrupt  # Ctrl-C halfway

    with pytest.raises(KeyboardInterrupt):
        pull(plan(f"{GGUF_REPO}:Q4_1"), progress=interrupt)
    partial = next((Path(os.environ["HF_HOME"]) / "hub").rglob("*.incomplete"))
    kept = partial.stat().st_size
    assert size // 3 < kept < size
    seen: list[tuple[int, int]] = []
    pulled = pull(plan(f"{GGUF_REPO}:Q4_1"), progress=lambda d, t: seen.append((d, t)))
    assert pulled.resumed == kept and pulled.downloaded == size - kept
    assert seen[0] == (kept, size) and seen[-1] == (size, size)
    assert _storage_gets(online_hub)[-1][2] == f"bytes={kept}-"
    assert _sha256(pulled.path) == _sha256(smollm_path) and not partial.exists()


@pytest.mark.hub
def test_a_corrupted_byte_is_caught_and_never_cached(online_hub: Hub) -> None:
    online_hub.corrupt[Q4] = 12_345_678
    with pytest.raises(HubError, match=r"sha256 .* the damaged download was deleted"):
        pull(plan(f"{GGUF_REPO}:Q4_1"))
    cache = Path(os.environ["HF_HOME"]) / "hub"
    assert not list(cache.rglob("blobs/*")) and not list(cache.rglob("snapshots/*/*"))
    online_hub.corrupt.clear()
    assert pull(plan(f"{GGUF_REPO}:Q4_1")).files == [Q4]


@pytest.mark.hub
def test_a_full_disk_is_refused_before_the_download(online_hub: Hub) -> None:
    chosen = plan(f"{GGUF_REPO}:Q4_1")
    with pytest.raises(PullRefusedError, match=r"needs 93.8 MiB more on disk .* has 1.0 MiB free"):
        pull(chosen, free_space=lambda path: 1 << 20)
    assert not _downloads(online_hub)


def test_an_hf_pull_takes_the_files_an_engine_reads() -> None:
    from scheda.files.pull import model_files
    from scheda.readers.hub import HubFile, Listing

    def names(*files: str) -> list[str]:
        listing = Listing("o/m", "0" * 40, {f: HubFile(f, 1, "b", None) for f in files})
        return [f.name for f in model_files(listing)]

    common = ("config.json", "tokenizer.json", ".gitattributes", "onnx/model.onnx")
    assert names(*common, "model.safetensors", "pytorch_model.bin", "tf_model.h5") == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    # No safetensors: PyTorch's own weights are what transformers reads.
    assert names(*common, "pytorch_model.bin") == [
        "config.json",
        "pytorch_model.bin",
        "tokenizer.json",
    ]


@pytest.mark.hub
def test_pull_names_a_file_when_the_repository_holds_several(online_hub: Hub) -> None:
    with pytest.raises(ModelNotFoundError, match=r"several GGUF files \(tags Q4_1, Q8_0\)"):
        plan(GGUF_REPO)
    assert plan(GGUF_REPO, file=Q8).reference == f"{GGUF_REPO}:Q8_0"


# -- the commands ----------------------------------------------------------------------------


def _scheda(hub: Hub, *args: str, offline: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env["HF_ENDPOINT"] = hub.url
    env["COLUMNS"] = "200"  # a caption on one line
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "scheda", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.hub
def test_card_fit_and_pull_commands(online_hub: Hub, smollm_path: Path) -> None:
    card = _json(_scheda(online_hub, "card", GGUF_REPO, "--file", Q4, "--json"))["models"][0]
    assert card["path"] == f"{GGUF_REPO}:Q4_1" and card["remote"]["requests"] == 3
    fit = _json(_scheda(online_hub, "fit", f"{GGUF_REPO}:Q8_0", "--gpu", "t4", "--json"))
    assert [f["read"] for f in fit["files"]] == [False, True]
    assert set(fit["files"][0]["fits"]) == {"host", "t4"}
    text = _scheda(online_hub, "card", GGUF_REPO)
    assert "3 requests, the listing included" in text.stdout and "Q8_0" in text.stdout
    refused = _scheda(online_hub, "pull", f"{GGUF_REPO}:Q8_0", "--memory", "0.2")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "it will not fit" in refused.stderr and "--force" in refused.stderr
    pulled = _json(_scheda(online_hub, "pull", f"{GGUF_REPO}:Q4_1", "--json"))
    assert pulled["plan"]["fits"] and pulled["pulled"]["files"] == [Q4]
    offline = _json(_scheda(online_hub, "card", f"{GGUF_REPO}:Q4_1", "--json", offline=True))
    local = _json(_scheda(online_hub, "card", str(smollm_path), "--json", offline=True))
    assert offline["models"][0]["path"] == pulled["pulled"]["path"]
    assert {k: v for k, v in offline["models"][0].items() if k != "path"} == {
        k: v for k, v in local["models"][0].items() if k != "path"
    }


@pytest.mark.hub
def test_a_gated_pull_is_one_line(online_hub: Hub, smollm_path: Path) -> None:
    online_hub.add("meta-test/Gated-GGUF", {Q4: smollm_path}, gated=True)
    done = _scheda(online_hub, "pull", "meta-test/Gated-GGUF")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "is gated (401)" in done.stderr and "set HF_TOKEN, or run `hf auth login`" in done.stderr


# -- the readers under the remote ones -------------------------------------------------------


def test_the_safetensors_reader_agrees_with_the_library(minilm_path: Path) -> None:
    from safetensors import safe_open

    ours = read_safetensors_header(minilm_path / "model.safetensors")
    with safe_open(str(minilm_path / "model.safetensors"), framework="numpy") as f:
        theirs = {
            name: (str(f.get_slice(name).get_dtype()), list(f.get_slice(name).get_shape()))
            for name in f.keys()  # noqa: SIM118 (safe_open is not a mapping)
        }
    assert ours == theirs


TOKENIZERS: dict[str, tuple[dict[str, Any], dict[str, Any], tuple[str, str]]] = {
    "byte-level BPE": (
        {"pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}},
        {"type": "BPE", "byte_fallback": False},
        ("BPE", "tokenizer.json (byte-level)"),
    ),
    "SentencePiece BPE": (
        {"pre_tokenizer": {"type": "Metaspace"}, "decoder": None},
        {"type": "BPE", "byte_fallback": True},
        ("SentencePiece", "tokenizer.json (BPE with byte fallback)"),
    ),
    "Unigram": (
        {"pre_tokenizer": None, "decoder": None},
        {"type": "Unigram", "unk_id": 0},
        ("SentencePiece (Unigram)", "tokenizer.json"),
    ),
}


@pytest.mark.parametrize("model_first", [False, True])
@pytest.mark.parametrize("case", list(TOKENIZERS))
def test_the_tokenizer_is_told_by_the_start_of_tokenizer_json(
    tmp_path: Path, case: str, model_first: bool
) -> None:
    """The walk over the file's start answers as parsing the whole file does; a file that
    puts `model` first is parsed whole, and says the same."""
    from scheda.readers import hf_folder

    top, model, expected = TOKENIZERS[case]
    vocab = {f"token{i}": i for i in range(20_000)}  # past the first read
    body = {**model, "vocab": vocab, "merges": []}
    data = {"model": body, **top} if model_first else {"version": "1.0", **top, "model": body}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    folder = LocalFolder(tmp_path)
    assert hf_folder._tokenizer_kind(folder) == expected
    walked = hf_folder._walk_tokenizer((tmp_path / "tokenizer.json").read_text()[:20_000])
    assert (walked is None) == model_first


def test_fit_and_pull_agree_with_no_flags(online_hub: Hub) -> None:
    """Neither names a context, so both weigh the file at the one context a command uses
    (settings.context_for: SmolLM2's trained 8,192 capped at 4,096); `fit` cannot call a file
    fitting that `pull` refuses, or the other way round."""
    budget = hardware.custom(0.23)  # 235 MiB: the Q4_1 file fits at 4,096, the Q8_0 does not
    for tag, fits in (("Q4_1", True), ("Q8_0", False)):
        pulled = plan(f"{GGUF_REPO}:{tag}", device=budget)
        fit = fit_report(resolve(f"{GGUF_REPO}:{tag}"), None, 1, [budget]).to_dict()
        assert fit["context"] == pulled.context == 4096
        [device] = fit["devices"]
        assert device["fits"]["file"] is pulled.fits is fits, tag
