"""Hugging Face transformers: an HF folder on the CPU, or on a GPU where there is one.

The tokenizer, the chat template and the sampler are transformers' own
(`AutoTokenizer`, `apply_chat_template`, `model.generate`); scheda adds what
`generate` does not say by itself, in one `StoppingCriteria` that sees every
new token of every sample:

- streaming: each sample's new text, decoded incrementally (a character split
  across tokens is held back until it is whole) and sent to `on_text(i, text)`
  for every sample, as llama.cpp does with `n` > 1;
- stop strings, matched on the decoded text like llama.cpp and the OpenAI
  API: the text stops before the stop string, and the text that might begin
  one is held back from the stream until it is decided;
- cancelling: when the event is set, generation ends after the current token.

Loads are offline only (`local_files_only`). On the CPU the weights run in
float32 (float16 matrix products are slow there); on a GPU in the dtype the
config names. 8- and 4-bit loading go through bitsandbytes, on CUDA only.
"""

from __future__ import annotations

import gc
import json
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import transformers

from scheda import settings
from scheda.engines.base import (
    Engine,
    Generation,
    Message,
    OnText,
    Sample,
    Timings,
    Token,
    TokenLogprob,
    check_sampling,
    check_token_ids,
    stopwatch,
)
from scheda.errors import EngineError, ModelFileError, PromptTooLongError, UsageError
from scheda.hardware import physical_cores
from scheda.pieces import hf_piece, is_byte_level
from scheda.sampling import Sampling

DTYPES = ("auto", "float32", "float16", "bfloat16")
QUANTIZE = (None, "8bit", "4bit")
CUDA_INSTALL = "pip install 'scheda[cuda]'"
# A character is at most 4 UTF-8 bytes; byte-level tokenizers may split one over as many tokens.
HOLD_TOKENS = 4


def _quiet() -> None:
    """transformers' log lines and progress bars would drown the terminal."""
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


class TransformersEngine(Engine):
    name = "transformers"

    def __init__(
        self,
        path: Path,
        context: int | None = None,
        parallel: int = 1,  # llama.cpp's slots; transformers batches the `n` samples instead
        threads: int | None = None,
        warmup: bool = True,
        dtype: str = "auto",
        device: str = "auto",
        quantize: str | None = None,
    ) -> None:
        _quiet()
        if dtype not in DTYPES:
            raise UsageError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        if quantize not in QUANTIZE:
            raise UsageError(f"unknown quantization {quantize!r}: choose 8bit or 4bit")
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ModelFileError(f"{path}: no config.json, not an HF model folder")
        self.path = path
        self.device = _device(device)
        if quantize is not None:
            _check_bitsandbytes(quantize, self.device)
        torch.set_num_threads(threads or physical_cores())
        self._lock = threading.Lock()
        elapsed = stopwatch()
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(path), local_files_only=True
            )
            config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
            self.dtype = _dtype(dtype, config, self.device)
            options: dict[str, Any] = {"dtype": self.dtype, "local_files_only": True}
            if quantize is not None:
                options["quantization_config"] = _bitsandbytes_config(quantize, self.dtype)
            if self.device.type == "cuda":
                options["device_map"] = {"": str(self.device)}
            model = transformers.AutoModelForCausalLM.from_pretrained(str(path), **options)
        except Exception as exc:  # transformers, safetensors and torch each raise their own
            raise EngineError(
                f"{path}: transformers could not load the model ({_line(exc)})"
            ) from exc
        if self.device.type != "cuda":
            model = model.to(self.device)
        self.model = model.eval()
        self.quantize = quantize
        trained = getattr(config.get_text_config(), "max_position_embeddings", None)
        self.trained_context = int(trained) if trained else None
        # Never past the trained positions, even when asked: some architectures have no more.
        wanted = settings.context_for(context, self.trained_context)
        self.context = min(wanted, self.trained_context) if self.trained_context else wanted
        self._eos = _token_ids(model.generation_config.eos_token_id) or _token_ids(
            self.tokenizer.eos_token_id
        )
        pads = (
            *_token_ids(model.generation_config.pad_token_id),
            *_token_ids(self.tokenizer.pad_token_id),
            *self._eos,
        )
        self._pad = pads[0] if pads else 0
        self._byte_level = self.tokenizer.is_fast and is_byte_level(
            json.loads(self.tokenizer.backend_tokenizer.to_str()).get("decoder")
        )
        capabilities = {"generate", "stream", "cancel", "n", "seed", "logprobs"}
        if self.tokenizer.chat_template:
            capabilities.add("chat")
        self.capabilities = frozenset(capabilities)
        if warmup:
            with torch.inference_mode():
                self.model(torch.tensor([[self._any_token()]], device=self.device))
        self.load_s = elapsed()

    def _any_token(self) -> int:
        for candidate in (self.tokenizer.bos_token_id, *self._eos, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    # -- tokens ----------------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = False) -> list[Token]:
        ids = self._encode(text, add_special)
        pieces = self.tokenizer.convert_ids_to_tokens(ids)
        return [Token(i, hf_piece(p, self._byte_level)) for i, p in zip(ids, pieces, strict=True)]

    def tokenizer_info(self) -> dict[str, Any]:
        t = self.tokenizer
        return {
            "tokenizer_class": type(t).__name__,
            "bos_token": t.bos_token,
            "eos_token": t.eos_token,
            "pad_token": t.pad_token,
            "chat_template": t.chat_template if isinstance(t.chat_template, str) else None,
            "model_max_length": self.context,
        }

    def detokenize(self, ids: list[int]) -> str:
        check_token_ids(ids, self.model.get_input_embeddings().num_embeddings)
        return str(
            self.tokenizer.decode(
                list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
        )

    def _encode(self, text: str, add_special: bool) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=add_special)["input_ids"]
        return [int(i) for i in ids]

    def _text(self, ids: list[int]) -> str:
        return str(
            self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        )

    # -- chat ------------------------------------------------------------------------------

    def chat_prompt(self, messages: list[Message]) -> str:
        if not self.tokenizer.chat_template:
            raise EngineError(
                f"{self.path.name} has no chat template: use `generate` without --chat"
            )
        try:
            prompt = self.tokenizer.apply_chat_template(
                [asdict(m) for m in messages], tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # the template's own errors (jinja2, raise_exception)
            raise EngineError(f"the chat template failed: {_line(exc)}") from exc
        return str(prompt)

    def chat(
        self,
        messages: list[Message],
        sampling: Sampling | None = None,
        on_text: OnText | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        # The template writes the BOS text itself: no special tokens added again.
        prompt = self.chat_prompt(messages)
        return self._generate(self._encode(prompt, False), sampling, on_text, cancel)

    # -- generation ------------------------------------------------------------------------

    def generate(
        self,
        prompt: str | list[int],
        sampling: Sampling | None = None,
        on_text: OnText | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        ids = self._encode(prompt, True) if isinstance(prompt, str) else [int(t) for t in prompt]
        check_token_ids(ids, self.model.get_input_embeddings().num_embeddings)
        return self._generate(ids, sampling, on_text, cancel)

    def _generate(
        self,
        prompt_ids: list[int],
        sampling: Sampling | None,
        on_text: OnText | None,
        cancel: threading.Event | None,
    ) -> Generation:
        sampling = sampling or Sampling()
        if sampling.n < 1:
            raise UsageError(f"n must be at least 1, not {sampling.n}")
        check_sampling(self.name, sampling)
        room = self.context - len(prompt_ids)
        if room <= 0:
            raise PromptTooLongError(len(prompt_ids), self.context)
        # Never past the context: the request is capped, and ends with "length".
        max_new = min(sampling.max_tokens, room) if sampling.max_tokens > 0 else room
        watch = _Watch(self, sampling, len(prompt_ids), on_text, cancel)
        if not prompt_ids:  # nothing to continue from: start at BOS, as llama.cpp does
            prompt_ids = [self._any_token()]
        inputs = torch.tensor([prompt_ids] * sampling.n, device=self.device)
        options: dict[str, Any] = {
            "input_ids": inputs,
            "attention_mask": torch.ones_like(inputs),
            "generation_config": self._generation_config(sampling, max_new),
            "stopping_criteria": transformers.StoppingCriteriaList([watch]),
        }
        with self._lock, torch.random.fork_rng(devices=self._rng_devices()):
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            if cancel is None or not cancel.is_set():
                output = self.model.generate(**options)
                if sampling.logprobs > 0:
                    watch.add_logprobs(output.logits, sampling.logprobs)
        return watch.result()

    def _generation_config(self, sampling: Sampling, max_new: int) -> Any:
        """Every sampling option spelled out, as scheda's `Sampling` says.

        transformers fills the options left unset from the model's own
        generation_config.json (often temperature 0.6 and top_p 0.9), so a value that
        turns a sampler off is given, never left unset.
        """
        sample = sampling.temperature > 0
        return transformers.GenerationConfig(
            max_new_tokens=max_new,
            # ignore_eos: end-of-text is masked until max_new (llama.cpp biases it to -inf).
            min_new_tokens=max_new if sampling.ignore_eos else 0,
            do_sample=sample,
            num_beams=1,
            temperature=sampling.temperature if sample else 1.0,
            top_k=max(sampling.top_k, 0) if sample else 0,
            top_p=sampling.top_p if sample and 0 < sampling.top_p < 1 else 1.0,
            min_p=min(max(sampling.min_p, 0.0), 1.0) if sample else 0.0,
            typical_p=1.0,
            epsilon_cutoff=0.0,
            eta_cutoff=0.0,
            repetition_penalty=sampling.repeat_penalty or 1.0,  # 0 means off, as 1 does
            no_repeat_ngram_size=0,
            eos_token_id=list(self._eos) or None,
            pad_token_id=self._pad,
            bos_token_id=self.model.generation_config.bos_token_id,
            return_dict_in_generate=True,
            output_logits=sampling.logprobs > 0,
        )

    def _rng_devices(self) -> list[Any]:
        return [self.device] if self.device.type == "cuda" else []

    def close(self) -> None:
        model = getattr(self, "model", None)
        if model is None:
            return
        self.model = None
        del model
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class _Sample:
    """One sample's tokens and text, decoded as they come (vLLM's incremental detokenizer)."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.prefix = 0  # decoding starts here, a few tokens back, so spaces come out right
        self.read = 0  # tokens before this one are in `text`
        self.text = ""  # decoded so far, stop strings not yet cut
        self.sent = 0  # characters of `text` sent to the stream
        self.finish: str | None = None
        self.cut = False  # ended by a stop string
        self.logprobs: list[TokenLogprob] | None = None

    def new_text(self, engine: TransformersEngine, final: bool = False) -> str:
        before = engine._text(self.ids[self.prefix : self.read])
        after = engine._text(self.ids[self.prefix :])
        if not final and after.endswith("\ufffd") and len(self.ids) - self.read < HOLD_TOKENS:
            return ""  # a character is still arriving
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before) :]


class _Watch(transformers.StoppingCriteria):
    """Sees each new token of every sample: streams it, stops at EOS, a stop string or cancel."""

    def __init__(
        self,
        engine: TransformersEngine,
        sampling: Sampling,
        prompt_tokens: int,
        on_text: OnText | None,
        cancel: threading.Event | None,
    ) -> None:
        self.engine = engine
        self.stops = [s for s in sampling.stop if s]
        self.prompt_tokens = prompt_tokens
        self.on_text = on_text
        self.cancel = cancel
        self.samples = [_Sample() for _ in range(sampling.n)]
        self.cancelled = cancel is not None and cancel.is_set()
        self.elapsed = stopwatch()
        self.first_token_s = 0.0

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        if not self.first_token_s:
            self.first_token_s = self.elapsed()
        last = input_ids[:, -1].tolist()
        for i, (sample, token) in enumerate(zip(self.samples, last, strict=True)):
            if sample.finish is not None:
                continue
            if token in self.engine._eos:
                sample.finish = "stop"
                continue
            sample.ids.append(int(token))
            sample.text += sample.new_text(self.engine)
            self._send(i, sample)
        if self.cancel is not None and self.cancel.is_set():
            self.cancelled = True
        done = [self.cancelled or s.finish is not None for s in self.samples]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    def _send(self, i: int, sample: _Sample, final: bool = False) -> None:
        """Send what is decided: text before any stop string, minus a possible stop's start."""
        end = len(sample.text)
        for stop in self.stops:
            at = sample.text.find(stop, max(0, sample.sent - len(stop) + 1))
            if 0 <= at < end:
                end = at
        if end < len(sample.text):  # a stop string: the text ends before it
            sample.text, sample.finish, sample.cut = sample.text[:end], "stop", True
        elif not final:
            end -= _held_back(sample.text, self.stops)
        if end > sample.sent:
            new, sample.sent = sample.text[sample.sent : end], end
            if self.on_text is not None:
                self.on_text(i, new)

    def add_logprobs(self, logits: tuple[torch.Tensor, ...], top: int) -> None:
        """Log-probabilities of the raw logits (before sampling), as llama.cpp reports them."""
        engine = self.engine
        for i, sample in enumerate(self.samples):
            entries: list[TokenLogprob] = []
            for step, token in enumerate(sample.ids):
                if step >= len(logits):
                    break
                row = torch.log_softmax(logits[step][i].float(), dim=-1)
                values, ids = torch.topk(row, min(top, row.shape[-1]))
                entries.append(
                    TokenLogprob(
                        _piece_text(engine, token),
                        float(row[token]),
                        [
                            (_piece_text(engine, int(t)), float(v))
                            for v, t in zip(values.tolist(), ids.tolist(), strict=True)
                        ],
                    )
                )
            sample.logprobs = entries

    def result(self) -> Generation:
        for i, sample in enumerate(self.samples):
            if not sample.cut:  # what was held back is text after all
                sample.text += sample.new_text(self.engine, final=True)
                self._send(i, sample, final=True)
                if sample.finish is None:
                    sample.finish = "cancelled" if self.cancelled else "length"
        total = self.elapsed()
        samples = [
            Sample(s.text, s.finish or "length", len(s.ids), s.logprobs) for s in self.samples
        ]
        first = self.first_token_s
        decode_s = total - first
        # Decoding steps after the first, per second: one sample's rate, as llama.cpp reports.
        after_first = max(s.completion_tokens for s in samples) - 1
        timings = Timings(
            load_s=self.engine.load_s,
            first_token_s=first,
            total_s=total,
            prompt_tokens_per_s=self.prompt_tokens / first if first > 0 else 0.0,
            tokens_per_s=after_first / decode_s if after_first > 0 and decode_s > 0 else 0.0,
        )
        return Generation(samples, self.prompt_tokens, timings)


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` could be the start of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


def _piece_text(engine: TransformersEngine, token: int) -> str:
    piece = engine.tokenizer.convert_ids_to_tokens(token)
    return hf_piece(str(piece), engine._byte_level).decode("utf-8", errors="replace")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"unknown device {name!r}: use auto, cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(
            f"device {name} asked for, but PyTorch sees no CUDA GPU here: use --device cpu"
        )
    return device


def _dtype(name: str, config: Any, device: torch.device) -> torch.dtype:
    if name != "auto":
        return getattr(torch, name)  # type: ignore[no-any-return]
    if device.type == "cpu":
        return torch.float32  # float16 matrix products are slow on a CPU
    saved = getattr(config.get_text_config(), "dtype", None) or getattr(config, "dtype", None)
    if isinstance(saved, str):
        saved = getattr(torch, saved, None)
    if saved not in (torch.float16, torch.bfloat16, torch.float32):
        saved = torch.float16
    if saved == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16  # older GPUs (a T4) have no bfloat16
    return saved  # type: ignore[no-any-return]


def _check_bitsandbytes(quantize: str, device: torch.device) -> None:
    import importlib.util

    if device.type != "cuda":
        raise EngineError(
            f"{quantize} loading goes through bitsandbytes, which needs an NVIDIA GPU with "
            "CUDA, and there is none here: drop --quantize, or run a quantized GGUF with llama.cpp"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise EngineError(f"{quantize} loading needs bitsandbytes: run `{CUDA_INSTALL}`")


def _bitsandbytes_config(quantize: str, dtype: torch.dtype) -> Any:
    if quantize == "8bit":
        return transformers.BitsAndBytesConfig(load_in_8bit=True)
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.float16,
    )


def _token_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def _line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
