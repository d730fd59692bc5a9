"""llama.cpp through `xllamacpp`: llama.cpp's own server engine, in this process.

The engine (continuous batching over parallel slots, the chat template,
sampling, tokenizer) is llama.cpp's, called directly. xllamacpp also opens
llama.cpp's HTTP listener; scheda keeps it on loopback and locked with a
random key made for this process, and uses it only for what the Python
binding does not expose (tokenization with pieces).

Tools, response formats and logit biases go to llama.cpp as its server takes
them (its template renders the tools, its parser reads the calls, its grammar
holds a JSON schema). A template that knows no tools gets the generic format
of generic_tools.py instead, held by the same grammar. Calls stream either way:
llama.cpp's parser sends their pieces, generic_tools' reader finds them in the
JSON as it is written.

A request takes its slots here before it reaches llama.cpp, and waits here
when all are busy: llama.cpp's own queue would hold a request whose client has
gone until a slot freed, then process its prompt, where this wait sees the
cancel at once. Stop strings of a one-sample request are matched here too, on
the text as it streams, as llama.cpp matches them: its answer does not say
which one matched, and Anthropic's API reports it.
"""

from __future__ import annotations

import json
import secrets
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scheda import settings
from scheda.engines import generic_tools
from scheda.engines.base import (
    CallPiece,
    Engine,
    Generation,
    Guide,
    Message,
    OnCall,
    OnText,
    Sample,
    Timings,
    Token,
    TokenLogprob,
    ToolCall,
    check_sampling,
    check_token_ids,
    first_stop,
    held_back,
    stopwatch,
)
from scheda.errors import EngineError, PromptTooLongError, RequestFieldError, SchedaError
from scheda.formulas.hardware import physical_cores
from scheda.sampling import Sampling

LOOPBACK = "127.0.0.1"
SLOT_SIMILARITY = 0.1  # llama.cpp's default: a request goes to the slot whose prompt it extends
PROMPT_CACHE_DEFAULT_MIB = 8192  # llama.cpp's own, for a model whose KV cache is not known
HTTP_TIMEOUT_S = 60
SLOTS_TIMEOUT_S = 2  # /health asks: it answers without a slot's detail rather than wait long
QUEUE_POLL_S = 0.05  # how often a request waiting for a slot looks at its cancel event


class LlamaCppEngine(Engine):
    name = "llama.cpp"
    capabilities = frozenset({"generate", "stream", "chat", "cancel", "n", "seed", "logprobs"})

    def __init__(
        self,
        path: Path,
        context: int | None = None,
        parallel: int = 1,
        threads: int | None = None,
        warmup: bool = True,
    ) -> None:
        self._start(path, settings.context_for(context, None), parallel, threads, warmup)
        meta = self.model_meta()
        self.vocab_size = int(meta.get("n_vocab") or 0)
        trained = int(meta.get("n_ctx_train") or 0)
        self.trained_context = trained or None
        if settings.context_for(context, trained) != self.context:
            # Asked for nothing in particular: never more than the model was trained on.
            loaded = self.load_s
            self.close()
            self._start(path, settings.context_for(context, trained), parallel, threads, warmup)
            self.load_s += loaded

    def _start(
        self, path: Path, context: int, parallel: int, threads: int | None, warmup: bool
    ) -> None:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = context * parallel  # llama.cpp splits n_ctx over the slots
        params.n_parallel = parallel
        params.cpuparams.n_threads = threads or physical_cores()
        params.cpuparams_batch.n_threads = threads or physical_cores()
        params.warmup = warmup
        # llama.cpp's fitting pass loads the model twice to size GPU layers; on the CPU
        # it only costs start-up time.
        params.fit_params = False
        params.verbosity = -1  # llama.cpp's log would drown the terminal
        params.hostnames = [LOOPBACK]
        params.port = 0  # a free port chosen by the OS
        params.n_threads_http = 2
        # A conversation's next turn reads its earlier turns from a slot's cache. With other
        # clients between its turns, llama.cpp may give its slot to one of them (they share the
        # template's head, so every slot looks alike to its `slot_prompt_similarity`); the
        # prompt the slot gave up is then kept in memory and restored for the next turn.
        # llama.cpp's own limit for that memory is 8 GiB: bounded here by the slots' KV cache.
        params.slot_prompt_similarity = SLOT_SIMILARITY
        params.cache_ram_mib = prompt_cache_mib(path, context * parallel)
        self._key = secrets.token_urlsafe(24)
        params.api_keys = [self._key]
        self.path = path
        self.context = context
        self.parallel = parallel
        self._slots = _Slots(parallel)
        elapsed = stopwatch()
        try:
            self._server = xllamacpp.Server(params)
        except Exception as exc:
            raise EngineError(f"{path}: llama.cpp could not load the model ({exc})") from exc
        self.load_s = elapsed()
        self._address = str(self._server.listening_address)
        if not self._address.startswith(f"http://{LOOPBACK}:"):
            self.close()
            raise EngineError(f"llama.cpp listened on {self._address}, not on loopback: refusing")
        caps = self._post("/props", None).get("chat_template_caps") or {}
        self.template_knows_tools = bool(caps.get("supports_tools"))

    def tokenizer_info(self) -> dict[str, Any]:
        props = self._post("/props", None)
        return {
            "bos_token": props.get("bos_token") or None,
            "eos_token": props.get("eos_token") or None,
            "pad_token": None,
            "chat_template": props.get("chat_template") or None,
            "model_max_length": self.context,
        }

    def model_meta(self) -> dict[str, Any]:
        """llama.cpp's facts about the loaded model: n_ctx_train, n_params, size, ftype..."""
        return dict(self._post("/v1/models", None)["data"][0].get("meta") or {})

    def slots(self) -> list[dict[str, Any]]:
        """What each slot is doing, from llama.cpp's `/slots`: its id, state, context and the
        tokens it has decoded for its request; never the request's text or parameters."""
        return [
            {
                "id": slot.get("id"),
                "state": "processing" if slot.get("is_processing") else "idle",
                "n_ctx": slot.get("n_ctx"),
                "decoded": sum(int(t.get("n_decoded") or 0) for t in _listed(slot)),
            }
            for slot in self._post("/slots", None, SLOTS_TIMEOUT_S)
        ]

    def _post(
        self, route: str, body: dict[str, Any] | None, timeout: float = HTTP_TIMEOUT_S
    ) -> Any:
        """A call to llama.cpp's own listener (POST with a body, GET without)."""
        request = urllib.request.Request(
            self._address + route,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:  # llama.cpp's own error object, with its code
            raise _error(_error_answer(exc)) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise EngineError(f"llama.cpp {route} failed: {exc}") from exc

    def tokenize(self, text: str, add_special: bool = False) -> list[Token]:
        answer = self._post(
            "/tokenize", {"content": text, "add_special": add_special, "with_pieces": True}
        )
        return [Token(int(t["id"]), _piece_bytes(t["piece"])) for t in answer["tokens"]]

    def detokenize(self, ids: list[int]) -> str:
        check_token_ids(ids, self.vocab_size)
        return str(self._post("/detokenize", {"tokens": list(ids)})["content"])

    def chat_prompt(self, messages: list[Message], guide: Guide | None = None) -> str:
        answer = self._post("/apply-template", self._conversation(messages, guide or Guide()))
        return str(answer["prompt"])

    def _grammar(self, schema: dict[str, Any]) -> str:
        import xllamacpp

        check_schema(schema, "the answer")
        try:
            return str(xllamacpp.json_schema_to_grammar(schema))
        except Exception as exc:  # the schema's fault: a tool's parameters, a response format
            raise EngineError(f"llama.cpp cannot hold this JSON schema: {exc}", True) from exc

    def _conversation(self, messages: list[Message], guide: Guide) -> dict[str, Any]:
        """The messages and guide as llama.cpp's chat request takes them: tools for its
        template and parser, or the generic format's prompt and schema where the template
        knows no tools."""
        check_token_ids(list(guide.logit_bias), self.vocab_size)
        check_schemas(guide)
        body: dict[str, Any] = {}
        if guide.logit_bias:
            body["logit_bias"] = {str(t): bias for t, bias in guide.logit_bias.items()}
        if generic_tools.applies(guide, self.template_knows_tools):
            body["messages"] = [m.to_openai() for m in generic_tools.messages(messages, guide)]
            # llama.cpp's own converter makes the grammar (llguidance's, which honours the
            # schema's compact-whitespace option; the chat route's own would not).
            body["grammar"] = self._grammar(generic_tools.schema(guide))
            return body
        if not self.template_knows_tools:  # a history with calls, written for this template
            messages = generic_tools.messages(messages, guide)
        body["messages"] = [m.to_openai() for m in messages]
        if guide.tools and self.template_knows_tools:
            body["tools"] = guide.tools
            body["parallel_tool_calls"] = guide.parallel_tool_calls
            choice = guide.tool_choice
            body["tool_choice"] = (
                choice
                if choice in ("auto", "none", "required")
                else {"type": "function", "function": {"name": choice}}
            )
        if guide.response_format is not None and "tools" in body:
            body["response_format"] = guide.response_format  # with its tools: llama.cpp's call
        elif guide.response_format is not None:
            body["grammar"] = self._grammar(generic_tools.answer_schema(guide.response_format))
        return body

    def generate(
        self,
        prompt: str | list[int],
        sampling: Sampling | None = None,
        on_text: OnText | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        sampling = sampling or Sampling()
        body = self._body(sampling, chat=False)
        body["prompt"] = prompt if isinstance(prompt, str) else [int(t) for t in prompt]
        if sampling.max_tokens <= 0:
            ids = body["prompt"]
            body["max_tokens"] = self._room(
                self.count_tokens(ids) if isinstance(ids, str) else len(ids)
            )
        return self._run(self._server.handle_completions, body, sampling, on_text, cancel)

    def chat(
        self,
        messages: list[Message],
        sampling: Sampling | None = None,
        on_text: OnText | None = None,
        cancel: threading.Event | None = None,
        guide: Guide | None = None,
        on_call: OnCall | None = None,
    ) -> Generation:
        sampling = sampling or Sampling()
        guide = guide or Guide()
        body = self._body(sampling, chat=True)
        body.update(self._conversation(messages, guide))
        if sampling.max_tokens <= 0:
            prompt = self.chat_prompt(messages, guide)  # its special tokens are in the text
            body["max_tokens"] = self._room(len(self.tokenize(prompt, add_special=False)))
        handler = self._server.handle_chat_completions
        if not generic_tools.applies(guide, self.template_knows_tools):
            return self._run(handler, body, sampling, on_text, cancel, on_call)
        # The JSON is not the answer's text: a reader per sample hands on what it holds.
        readers = [generic_tools.Reader(i, on_text, on_call) for i in range(sampling.n)]
        generation = self._run(handler, body, sampling, lambda i, t: readers[i].feed(t), cancel)
        for reader, sample in zip(readers, generation.samples, strict=True):
            reader.finish(sample)
        return generation

    def _room(self, prompt_tokens: int) -> int:
        """With no max_tokens, an answer may fill the context and no more: llama.cpp's own
        slot can be larger (it rounds small contexts up to 256 tokens)."""
        if prompt_tokens >= self.context:
            raise PromptTooLongError(prompt_tokens, self.context)
        return self.context - prompt_tokens

    def _body(self, sampling: Sampling, chat: bool) -> dict[str, Any]:
        """A request body in llama.cpp's own terms; its sampler does the rest."""
        check_sampling(self.name, sampling)
        if sampling.n > self.parallel:
            raise EngineError(
                f"{sampling.n} samples need {sampling.n} parallel slots; "
                f"this engine was loaded with {self.parallel}",
                client_fault=True,
            )
        body: dict[str, Any] = {
            "max_tokens": sampling.max_tokens,  # 0 or less: the room left (generate, chat)
            "temperature": sampling.temperature,
            "top_k": sampling.top_k,
            "top_p": sampling.top_p,
            "min_p": sampling.min_p,
            "repeat_penalty": sampling.repeat_penalty or 1.0,  # 0 means off, as 1 does
            "frequency_penalty": sampling.frequency_penalty,
            "presence_penalty": sampling.presence_penalty,
            # One sample's stop strings are matched here (`_Gatherer`), which can say which.
            "stop": list(sampling.stop) if sampling.n > 1 else [],
            "n": sampling.n,
            # A conversation's next turn starts from the slot's cache of the earlier ones
            # (llama.cpp's default, said here so that no default of another build undoes it).
            "cache_prompt": True,
            # Always streamed, even with no one watching: a stream is what can be cancelled.
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if sampling.n == 1 and sampling.stop:
            # Counts in every chunk: the stream is ended here at a stop, before its last one.
            body["timings_per_token"] = True
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.ignore_eos:
            body["ignore_eos"] = True
        if sampling.logprobs:
            if chat:
                body["logprobs"] = True
                body["top_logprobs"] = sampling.logprobs
            else:
                body["logprobs"] = sampling.logprobs
        return body

    def _run(
        self,
        handler: Callable[..., Any],
        body: dict[str, Any],
        sampling: Sampling,
        on_text: OnText | None,
        cancel: threading.Event | None,
        on_call: OnCall | None = None,
    ) -> Generation:
        """Send one request to llama.cpp, once it has its slots, and gather its stream into
        a `Generation`; a request cancelled while it waits for them never reaches llama.cpp."""
        n = sampling.n
        if not self._slots.take(n, cancel):
            return Generation(
                [Sample("", "cancelled", 0) for _ in range(n)], 0, Timings(self.load_s)
            )
        stops = [s for s in sampling.stop if s] if n == 1 else []
        gather = _Gatherer(n, on_text, cancel, on_call, stops)
        try:
            handler(body, gather.chunk)
        except ValueError as exc:  # the binding refuses the request itself (two answers in a row)
            raise EngineError(f"llama.cpp: {exc}", client_fault=True) from exc
        finally:
            self._slots.give(n)
        if gather.error is not None:
            raise _error(gather.error)
        return gather.result(self.load_s)

    def close(self) -> None:
        if getattr(self, "_server", None) is not None:
            self._server = None  # xllamacpp stops llama.cpp's loop when the Server is freed


def prompt_cache_mib(path: Path, positions: int) -> int:
    """The memory llama.cpp may keep the prompts its slots gave up in: as much as the slots'
    own KV cache at `positions` (at least 1 MiB), so that a model's memory grows by at most
    that, however many conversations it serves over hours."""
    from scheda.formulas.fit import kv_cache_bytes
    from scheda.readers import read_spec

    try:
        kv = kv_cache_bytes(read_spec(path), positions)
    except SchedaError:  # a file llama.cpp reads and the readers do not: llama.cpp's limit
        return PROMPT_CACHE_DEFAULT_MIB
    return max(1, -(-kv // 2**20)) if kv else PROMPT_CACHE_DEFAULT_MIB


def check_schemas(guide: Guide) -> None:
    """Each JSON schema the client sent, checked before llama.cpp's grammar engine gets it."""
    for at, tool in enumerate(guide.tools):
        parameters = tool["function"].get("parameters")
        if parameters is not None:
            check_schema(parameters, f"tools[{at}].function.parameters")
    form = guide.response_format or {}
    if form.get("type") == "json_schema" and form["json_schema"].get("schema"):
        check_schema(form["json_schema"]["schema"], "response_format.json_schema.schema")


def check_schema(schema: dict[str, Any], field: str) -> None:
    """A schema llguidance cannot compile is refused: llama.cpp would drop it unsaid and
    sample unconstrained (llguidance is the library its grammars run on)."""
    import llguidance

    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema)
        error = llguidance.LLMatcher.validate_grammar(grammar)
    except Exception as exc:  # the compiler's own refusal of the schema's shape
        error = str(exc)
    if error:
        reason = " ".join(error.split())
        raise RequestFieldError(f"{field}: this JSON schema cannot constrain an answer: {reason}")


class _Slots:
    """llama.cpp's parallel slots as this engine hands them out: a request takes one per
    sample before it is sent, first come first served, and gives them back when it ends."""

    def __init__(self, count: int) -> None:
        self.free = count
        self.waiting: deque[object] = deque()
        self.changed = threading.Condition()

    def take(self, n: int, cancel: threading.Event | None) -> bool:
        """Wait for `n` free slots, in turn; False, at once, if `cancel` is set meanwhile."""
        turn = object()
        with self.changed:
            self.waiting.append(turn)
            try:
                while True:
                    if cancel is not None and cancel.is_set():
                        return False
                    if self.waiting[0] is turn and self.free >= n:
                        self.free -= n
                        return True
                    self.changed.wait(QUEUE_POLL_S)
            finally:
                self.waiting.remove(turn)
                self.changed.notify_all()

    def give(self, n: int) -> None:
        with self.changed:
            self.free += n
            self.changed.notify_all()


class _Gatherer:
    """Collects llama.cpp's streamed chunks; its return value tells llama.cpp to stop.

    llama.cpp sends one chunk per token and sample (`index` says which), then
    a last chunk per sample with the finish reason, the token counts and its
    own timings. Returning True from the callback ends the stream, and
    llama.cpp cancels the task: at a cancel, and at a stop string matched
    here (`stops`, one sample's, which llama.cpp was not given).
    """

    def __init__(
        self,
        n: int,
        on_text: OnText | None,
        cancel: threading.Event | None,
        on_call: OnCall | None = None,
        stops: list[str] | None = None,
    ) -> None:
        self.on_text = on_text
        self.on_call = on_call
        self.cancel = cancel
        self.stops = stops or []
        self.held = [""] * n  # text that might begin a stop string, not yet handed on
        self.stop_sequences: list[str | None] = [None] * n
        self.stopped = False  # a stop string ended the (one) sample
        # Each sample's text in pieces, joined at the end: adding to a string would copy it
        # whole at every token.
        self.texts: list[list[str]] = [[] for _ in range(n)]
        self.tokens = [0] * n
        self.finish: list[str | None] = [None] * n
        self.logprobs: list[list[TokenLogprob] | None] = [None] * n
        self.calls: list[dict[int, ToolCall]] = [{} for _ in range(n)]
        self.prompt_tokens = 0
        self.cached_tokens: int | None = None  # the prompt's tokens the slot's cache held
        self.completion_tokens = 0  # llama.cpp's count: tool calls are tokens too
        self.engine_timings: dict[str, float] = {}
        self.error: dict[str, Any] | None = None
        self.elapsed = stopwatch()
        self.first_token_s = 0.0

    def chunk(self, data: dict[str, Any]) -> bool:
        if "error" in data:
            self.error = data["error"]
            return True
        for choice in data.get("choices", []):
            self._choice(choice)
        if "usage" in data:
            self.prompt_tokens = int(data["usage"].get("prompt_tokens", 0))
            self.completion_tokens = int(data["usage"].get("completion_tokens", 0))
            details = data["usage"].get("prompt_tokens_details") or {}
            if "cached_tokens" in details:
                self.cached_tokens = int(details["cached_tokens"])
        if "timings" in data:
            self.engine_timings = data["timings"]
        return self.stopped or (self.cancel is not None and self.cancel.is_set())

    def _choice(self, choice: dict[str, Any]) -> None:
        i = int(choice.get("index", 0))
        delta = choice.get("delta")
        text = (delta.get("content") if delta is not None else choice.get("text")) or ""
        if text and not self.first_token_s:
            self.first_token_s = self.elapsed()
        entries = (choice.get("logprobs") or {}).get("content") or []
        if entries:
            self.tokens[i] += len(entries)
            self.logprobs[i] = (self.logprobs[i] or []) + [_logprob(e) for e in entries]
        elif text:
            self.tokens[i] += 1
        if text and self.stops:
            text = self._decided(i, text)
        if text:
            self.texts[i].append(text)
            if self.on_text is not None:
                self.on_text(i, text)
        for call in (delta or {}).get("tool_calls") or []:
            self._call(i, call)
        if choice.get("finish_reason") and self.finish[i] is None:
            self.finish[i] = choice["finish_reason"]

    def _decided(self, i: int, text: str) -> str:
        """What of the new text is the answer's for sure: nothing from a stop string on (the
        stream ends there), nothing that might begin one (held until more text decides)."""
        if self.finish[i] is not None:
            return ""
        pending = self.held[i] + text
        found = first_stop(pending, self.stops)
        if found is not None:
            self.held[i] = ""
            self.finish[i], self.stop_sequences[i], self.stopped = "stop", found[1], True
            return pending[: found[0]]
        keep = len(pending) - held_back(pending, self.stops)
        self.held[i] = pending[keep:]
        return pending[:keep]

    def _call(self, i: int, delta: dict[str, Any]) -> None:
        """A piece of a tool call from llama.cpp's parser: its id and name first, then
        argument text in fragments, each handed to `on_call` as it comes."""
        if not self.first_token_s:
            self.first_token_s = self.elapsed()
        at = int(delta.get("index", 0))
        fresh = at not in self.calls[i]
        call = self.calls[i].setdefault(at, ToolCall("", "", ""))
        function = delta.get("function") or {}
        call.id = delta.get("id") or call.id or generic_tools.new_call_id()
        call.name += function.get("name") or ""
        arguments = function.get("arguments") or ""
        call.arguments += arguments
        if self.on_call is None or not (fresh or arguments):
            return
        piece = (
            CallPiece(at, call.id, call.name, arguments)
            if fresh
            else CallPiece(at, "", "", arguments)
        )
        self.on_call(i, piece)

    def result(self, load_s: float) -> Generation:
        total = self.elapsed()
        for i, held in enumerate(self.held):  # no stop string came: it was text after all
            if held:
                self.texts[i].append(held)
                if self.on_text is not None:
                    self.on_text(i, held)
        if len(self.tokens) == 1 and self.calls[0]:  # llama.cpp's parsed calls come as no text
            self.tokens[0] = max(self.tokens[0], self.completion_tokens)
        samples = [
            Sample(text, finish or "cancelled", tokens, logprobs, _whole(calls, finish), stop)
            for text, finish, tokens, logprobs, calls, stop in zip(
                ["".join(pieces) for pieces in self.texts],
                self.finish,
                self.tokens,
                self.logprobs,
                self.calls,
                self.stop_sequences,
                strict=True,
            )
        ]
        t = self.engine_timings
        generated = sum(s.completion_tokens for s in samples)
        decode_s = total - self.first_token_s
        timings = Timings(
            load_s=load_s,
            first_token_s=self.first_token_s,
            total_s=total,
            prompt_tokens_per_s=float(t.get("prompt_per_second", 0.0)),
            # llama.cpp's own decode rate when it reported one (per sample), else wall clock.
            tokens_per_s=float(t.get("predicted_per_second", 0.0))
            or ((generated - 1) / decode_s if generated > 1 and decode_s > 0 else 0.0),
        )
        # Ended here at a stop string, the stream had no usage chunk: its timings count the prompt
        # (`cache_n` taken from the slot's cache, `prompt_n` evaluated).
        prompt = self.prompt_tokens or int(t.get("prompt_n", 0)) + int(t.get("cache_n", 0))
        cached = self.cached_tokens
        if cached is None and "cache_n" in t:
            cached = int(t["cache_n"])
        return Generation(samples, prompt, timings, cached)


def _whole(calls: dict[int, ToolCall], finish: str | None) -> list[ToolCall]:
    """A sample's calls in order, less a last one cut short (max_tokens, a cancel): its
    arguments are not yet JSON."""
    listed = [c for _, c in sorted(calls.items())]
    if listed and finish not in ("stop", "tool_calls"):
        try:
            json.loads(listed[-1].arguments)
        except ValueError:
            listed.pop()
    return listed


def _listed(slot: dict[str, Any]) -> list[dict[str, Any]]:
    """A slot's `next_token`: a list of one object per sample (an object in older builds)."""
    tokens = slot.get("next_token") or []
    return [t for t in (tokens if isinstance(tokens, list) else [tokens]) if isinstance(t, dict)]


def _logprob(entry: dict[str, Any]) -> TokenLogprob:
    top = [(str(t["token"]), float(t["logprob"])) for t in entry.get("top_logprobs", [])]
    return TokenLogprob(str(entry["token"]), float(entry["logprob"]), top)


def _error(error: dict[str, Any]) -> EngineError:
    """llama.cpp's error object as scheda's error; a 4xx code there is the request's fault."""
    if error.get("type") == "exceed_context_size_error":
        return PromptTooLongError(int(error.get("n_prompt_tokens", 0)), int(error.get("n_ctx", 0)))
    message = str(error.get("message", error)).splitlines()[0]
    code = error.get("code")
    client_fault = isinstance(code, int) and 400 <= code < 500
    return EngineError(f"llama.cpp: {message}", client_fault=client_fault)


def _error_answer(exc: urllib.error.HTTPError) -> dict[str, Any]:
    """The error object of llama.cpp's answer, with the HTTP status as its code."""
    try:
        error = json.loads(exc.read())["error"]
    except (OSError, ValueError, KeyError, TypeError):
        error = None
    return {**(error if isinstance(error, dict) else {"message": str(exc)}), "code": exc.code}


def _piece_bytes(piece: str | list[int]) -> bytes:
    """llama.cpp sends a piece as text when it is valid UTF-8, else as a list of byte values."""
    if isinstance(piece, str):
        return piece.encode("utf-8")
    return bytes(piece)
