"""Hugging Face transformers: an HF folder on the CPU, or on a GPU where there is one.

The tokenizer, the chat template and the sampler are transformers' own
(`AutoTokenizer`, `apply_chat_template`, `model.generate`). This module loads
the model and shapes each request; what `generate` does not say by itself
(streaming, stop strings, cancelling, log-probabilities, timings) is the
`Watch` of hf_stream.py, one `StoppingCriteria` that sees every new token of
every sample.

Loads are offline only (`local_files_only`). On the CPU the weights run in
float32 (float16 matrix products are slow there); on a GPU in the dtype the
config names. 8- and 4-bit loading go through bitsandbytes, on CUDA only.
"""

from __future__ import annotations

import gc
import json
import threading
from pathlib import Path
from typing import Any

import torch
import transformers

from scheda import settings
from scheda.engines.base import (
    Engine,
    Generation,
    Guide,
    Message,
    OnCall,
    OnText,
    Token,
    check_guide,
    check_sampling,
    check_token_ids,
    stopwatch,
)
from scheda.engines.hf_stream import Watch
from scheda.errors import (
    EngineError,
    ModelFileError,
    PromptTooLongError,
    UsageError,
    install_hint,
)
from scheda.formulas.hardware import physical_cores
from scheda.pieces import hf_piece, is_byte_level
from scheda.sampling import Sampling

DTYPES = ("auto", "float32", "float16", "bfloat16")
QUANTIZE = (None, "8bit", "4bit")
CUDA_INSTALL = install_hint("cuda")


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
            # Any: transformers 5 types `.to` (a decorated method) as if it took no device.
            model: Any = transformers.AutoModelForCausalLM.from_pretrained(str(path), **options)
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

    def chat_prompt(self, messages: list[Message], guide: Guide | None = None) -> str:
        check_guide(self.name, guide)  # its tools would not be in the prompt
        if not self.tokenizer.chat_template:
            raise EngineError(
                f"{self.path.name} has no chat template: use `generate` without --chat"
            )
        try:
            prompt = self.tokenizer.apply_chat_template(
                [m.to_openai() for m in messages], tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # the template's own errors (jinja2, raise_exception)
            # What it refuses is the conversation sent (roles out of order, a tool turn).
            raise EngineError(f"the chat template failed: {_line(exc)}", True) from exc
        return str(prompt)

    def chat(
        self,
        messages: list[Message],
        sampling: Sampling | None = None,
        on_text: OnText | None = None,
        cancel: threading.Event | None = None,
        guide: Guide | None = None,
        on_call: OnCall | None = None,
    ) -> Generation:
        # No constrained decoding here yet: tools, response formats and biases are refused,
        # so no call is ever made and `on_call` is never called.
        check_guide(self.name, guide)
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
        watch = Watch(
            sampling,
            len(prompt_ids),
            on_text,
            cancel,
            decode=self._text,
            eos=self._eos,
            piece=lambda token: _piece_text(self, token),
            load_s=self.load_s,
        )
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
        dtype: torch.dtype = getattr(torch, name)
        return dtype
    if device.type == "cpu":
        return torch.float32  # float16 matrix products are slow on a CPU
    saved = getattr(config.get_text_config(), "dtype", None) or getattr(config, "dtype", None)
    if isinstance(saved, str):
        saved = getattr(torch, saved, None)
    if saved not in (torch.float16, torch.bfloat16, torch.float32):
        saved = torch.float16
    if saved == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16  # older GPUs (a T4) have no bfloat16
    return saved


def _check_bitsandbytes(quantize: str, device: torch.device) -> None:
    import importlib.util

    if device.type != "cuda":
        raise EngineError(
            f"{quantize} loading goes through bitsandbytes, which needs an NVIDIA GPU with "
            "CUDA, and there is none here: drop --quantize, or run a quantized GGUF with llama.cpp"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise EngineError(f"{quantize} loading needs bitsandbytes: run {CUDA_INSTALL}")


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
