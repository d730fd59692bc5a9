"""The commands that run a model: `generate`, `chat`, `convert` and `bench`.

Each builds an engine from the model reference (or `--engine`), then hands
the work to a library module; this file only parses options and prints.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from scheda.engines.base import Engine, Generation, Message, Sampling
from scheda.errors import UsageError
from scheda.terminal import console

if TYPE_CHECKING:
    from scheda.chat import ChatLoop

ModelArg = Annotated[
    str,
    typer.Argument(help="A .gguf file, an HF folder, 'default', or org/name in the HF cache."),
]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine", "-e", help="llama.cpp or transformers (default: from the model's format)."
    ),
]
ContextOpt = Annotated[
    int | None,
    typer.Option(
        "--context", "-c", min=16, help="Context length in tokens (default: 4096, or less)."
    ),
]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", min=1, help="CPU threads (default: physical cores).")
]
DtypeOpt = Annotated[
    str | None,
    typer.Option("--dtype", help="transformers: auto, float32, float16 or bfloat16."),
]
QuantizeOpt = Annotated[
    str | None,
    typer.Option("--quantize", help="transformers on a GPU: 8bit or 4bit (bitsandbytes)."),
]


@dataclass
class EngineChoice:
    """What the user asked for the engine; `open` loads it."""

    model: str
    engine: str | None = None
    context: int | None = None
    threads: int | None = None
    dtype: str | None = None
    quantize: str | None = None

    def open(self, parallel: int = 1) -> Engine:
        from scheda.engines import choose, load

        name, path = choose(self.model, self.engine)  # the reference is resolved once
        # No --context: each engine takes 4096 tokens, or less when the model was trained on less.
        options: dict[str, Any] = {"context": self.context, "parallel": parallel}
        if self.threads:
            options["threads"] = self.threads
        extra = {"dtype": self.dtype, "quantize": self.quantize}
        for key, value in extra.items():
            if value is None:
                continue
            if name != "transformers":
                raise UsageError(
                    f"--{key} is for the transformers engine; a GGUF carries its precision "
                    "in the file (pick another file, or --engine transformers on an HF folder)"
                )
            options[key] = value
        return load(name, path, **options)


def sampling_options(
    max_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    min_p: float,
    repeat_penalty: float,
    stop: list[str] | None,
    seed: int | None,
    n: int,
    logprobs: int,
) -> Sampling:
    return Sampling(
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repeat_penalty=repeat_penalty,
        stop=list(stop or []),
        seed=seed,
        n=n,
        logprobs=logprobs,
    )


MaxTokensOpt = Annotated[int, typer.Option("--max-tokens", "-m", min=1, help="New tokens at most.")]
TemperatureOpt = Annotated[
    float, typer.Option("--temperature", "-t", min=0.0, help="0 picks the likeliest token.")
]
TopKOpt = Annotated[int, typer.Option("--top-k", min=0, help="Keep the K likeliest (0: all).")]
TopPOpt = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling.")]
MinPOpt = Annotated[
    float, typer.Option("--min-p", min=0.0, max=1.0, help="Drop tokens below this x the best.")
]
RepeatOpt = Annotated[
    float, typer.Option("--repeat-penalty", min=0.0, help="Penalise repeats (1: off).")
]
StopOpt = Annotated[
    list[str] | None, typer.Option("--stop", help="Stop at this text (repeatable).")
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="The same seed gives the same text.")]


def generate(
    model: ModelArg,
    prompt: Annotated[str, typer.Argument(help="The prompt; '-' reads it from stdin.")],
    max_tokens: MaxTokensOpt = 256,
    temperature: TemperatureOpt = 0.8,
    top_k: TopKOpt = 40,
    top_p: TopPOpt = 0.95,
    min_p: MinPOpt = 0.05,
    repeat_penalty: RepeatOpt = 1.0,
    stop: StopOpt = None,
    seed: SeedOpt = None,
    n: Annotated[int, typer.Option("-n", min=1, max=16, help="Samples to draw.")] = 1,
    logprobs: Annotated[
        int, typer.Option("--logprobs", min=0, max=20, help="Top alternatives per token (JSON).")
    ] = 0,
    chat: Annotated[bool, typer.Option("--chat", help="Apply the model's chat template.")] = False,
    system: Annotated[
        str | None, typer.Option("--system", help="System prompt (with --chat).")
    ] = None,
    truncate: Annotated[
        bool, typer.Option("--truncate", help="Cut the start of a prompt too long for the context.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Text, token counts, finish reason and timings as JSON.")
    ] = False,
    engine: EngineOpt = None,
    context: ContextOpt = None,
    threads: ThreadsOpt = None,
    dtype: DtypeOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Continue a prompt, streamed to the terminal as it is written."""
    from scheda.generate import ctrl_c_cancels, fit_prompt, fit_user_message

    if system and not chat:
        raise UsageError("--system applies to --chat")
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise UsageError("the prompt is empty")
    sampling = sampling_options(
        max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, stop, seed, n, logprobs
    )
    choice = EngineChoice(model, engine, context, threads, dtype, quantize)
    err = Console(stderr=True)
    with choice.open(parallel=n) as loaded:
        if chat:
            messages = [Message("system", system)] if system else []
            messages, fitted = fit_user_message(
                loaded, [*messages, Message("user", prompt)], max_tokens, truncate
            )
        else:
            fitted = fit_prompt(loaded, prompt, max_tokens, truncate)
        if fitted.cut_tokens:
            err.print(
                f"[yellow]cut the first {fitted.cut_tokens:,} tokens of the prompt to fit the "
                f"{loaded.context:,}-token context ({fitted.tokens:,} tokens left)[/yellow]"
            )
        stream = not as_json and n == 1
        out = console()

        def show(_: int, text: str) -> None:
            out.out(text, end="", highlight=False)
            out.file.flush()

        with ctrl_c_cancels() as cancel:
            on_text = show if stream else None
            if chat:
                result = loaded.chat(messages, sampling, on_text, cancel)
            else:
                result = loaded.generate(fitted.prompt, sampling, on_text, cancel)
        _print_generation(result, loaded, sampling, fitted.cut_tokens, as_json, stream, out)
        if result.finish_reason == "cancelled":
            err.print("[dim](stopped)[/dim]")
            raise typer.Exit(130)


def _print_generation(
    result: Generation,
    loaded: Engine,
    sampling: Sampling,
    cut_tokens: int,
    as_json: bool,
    streamed: bool,
    out: Console,
) -> None:
    if as_json:
        data = result.to_dict()
        data.update(
            engine=loaded.name,
            context=loaded.context,
            truncated_tokens=cut_tokens,
            sampling=sampling.to_dict(),
        )
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    if streamed:
        out.out("")
        return
    for i, sample in enumerate(result.samples, 1):
        out.rule(f"sample {i} ({sample.finish_reason}, {sample.completion_tokens} tokens)")
        out.out(sample.text, highlight=False)


def chat(
    model: ModelArg,
    system: Annotated[str | None, typer.Option("--system", help="The system prompt.")] = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Go on with a saved session (its id).")
    ] = None,
    max_tokens: MaxTokensOpt = 512,
    temperature: TemperatureOpt = 0.8,
    top_k: TopKOpt = 40,
    top_p: TopPOpt = 0.95,
    min_p: MinPOpt = 0.05,
    repeat_penalty: RepeatOpt = 1.0,
    seed: SeedOpt = None,
    engine: EngineOpt = None,
    context: ContextOpt = None,
    threads: ThreadsOpt = None,
    dtype: DtypeOpt = None,
    quantize: QuantizeOpt = None,
) -> None:
    """Talk to a model in the terminal; every turn is saved (see `scheda sessions`)."""
    from scheda.chat import ChatLoop
    from scheda.sessions import SessionStore

    sampling = sampling_options(
        max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, None, seed, 1, 0
    )
    out = console()
    with SessionStore() as store:
        if resume:
            session = store.get(resume)
            if system is not None:
                store.set_system(session.id, system)
                session = store.get(session.id)
            if session.params:
                known = sampling.to_dict()
                sampling = Sampling(**{k: v for k, v in session.params.items() if k in known})
        else:
            session = store.create(model, system, sampling.to_dict())
        choice = EngineChoice(model, engine, context, threads, dtype, quantize)
        with out.status("loading the model..."):
            loaded = choice.open()
        with loaded:
            if "chat" not in loaded.capabilities:
                raise UsageError(f"{model} has no chat template: use `scheda generate`")
            out.print(
                f"[bold]session {session.id}[/bold] · {loaded.name} · context "
                f"{loaded.context:,} · /help for commands, /exit to leave\n"
                f"[dim]go on later with: scheda chat {model} --resume {session.id}[/dim]"
            )
            loop = ChatLoop(loaded, store, session, sampling, out)
            if resume:
                _recap(loop)
            loop.run(_reader(out))


def _recap(loop: ChatLoop) -> None:
    turns = loop.store.messages(loop.session.id)
    if turns:
        loop.console.print(f"[dim]({len(turns)} messages so far; /history shows them)[/dim]")


def _reader(out: Console) -> Any:
    """Read a line with a prompt on a terminal, plainly from a pipe."""
    if sys.stdin.isatty():
        return lambda: out.input("[bold cyan]>>> [/bold cyan]")

    def read() -> str:
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line

    return read


def convert(
    model: ModelArg,
    out: Annotated[Path, typer.Argument(help="The HF folder to write (new or empty).")],
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype", help="Saved precision: float16, bfloat16 or float32 (exact, twice the size)."
        ),
    ] = "float16",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Write into OUT even when it holds files.")
    ] = False,
) -> None:
    """A GGUF to an HF safetensors folder (through transformers), to run on both engines."""
    from scheda.convert import convert as convert_gguf
    from scheda.resolve import locate

    path = locate(model)
    if path is None:
        raise UsageError(f"{model!r} is a catalog entry, not a file: give a .gguf file")
    written = convert_gguf(path, out, dtype=dtype, overwrite=overwrite, progress=True)
    typer.echo(f"wrote {written} (scheda card {written} shows its spec sheet)")


def bench(
    model: ModelArg,
    vs: Annotated[
        list[str] | None,
        typer.Option(
            "--vs", help="Also run: engine, llama-cpp-python or transformers (repeatable)."
        ),
    ] = None,
    runs: Annotated[
        int, typer.Option("--runs", min=1, max=20, help="Rounds (each contender once per round).")
    ] = 3,
    threads: ThreadsOpt = None,
    hf_folder: Annotated[
        Path | None,
        typer.Option("--hf-folder", help="The HF folder for --vs transformers (default: convert)."),
    ] = None,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="Draw the figures into this PNG.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Load time, first token, pp512 and tg128 tokens/s, peak memory; --vs compares."""
    from scheda import bench as bench_module
    from scheda import render
    from scheda.resolve import locate

    path = locate(model)
    if path is None or not path.is_file() or path.suffix.lower() != ".gguf":
        raise UsageError(f"{model}: bench runs a GGUF file through llama.cpp; give one")
    vs = list(dict.fromkeys(vs or []))
    if "transformers" in vs and hf_folder is None:
        hf_folder = _converted(path)
    err = Console(stderr=True)
    with err.status("benchmarking...") as status:
        report = bench_module.run_bench(
            model, path, vs, runs, threads, hf_folder, lambda text: status.update(text)
        )
    if chart is not None:
        render.bench_chart(report, chart)
        err.print(f"chart: {chart}")
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console().print(render.bench_view(report))


def _converted(path: Path) -> Path:
    """The GGUF as an HF folder, converted once and kept in the user's cache."""
    import platformdirs

    from scheda.convert import convert as convert_gguf

    stat = path.stat()
    folder = (
        platformdirs.user_cache_path("scheda")
        / "converted"
        / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    )
    if not (folder / "config.json").is_file():
        convert_gguf(path, folder, overwrite=True, progress=True)
    return folder


def serve(
    models: Annotated[
        list[str] | None,
        typer.Argument(help="Models to serve; the first is the default. None: the embedded model."),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; 0.0.0.0 opens it to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535)] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", envvar="SCHEDA_API_KEY", help="Require this bearer key on the API."
        ),
    ] = None,
    engine: EngineOpt = None,
    context: ContextOpt = None,
    parallel: Annotated[
        int, typer.Option("--parallel", "-np", min=1, max=64, help="Requests decoded together.")
    ] = 4,
    queue: Annotated[
        int, typer.Option("--queue", min=0, help="Requests that may wait per model beyond those.")
    ] = 64,
    budget: Annotated[
        float | None,
        typer.Option("--budget", help="GB of memory for loaded models (default: RAM available)."),
    ] = None,
    threads: ThreadsOpt = None,
    max_body: Annotated[
        int, typer.Option("--max-body", min=1024, help="Largest request body, in bytes.")
    ] = 4 << 20,
) -> None:
    """Serve models over an OpenAI-compatible API, with the web studio at /."""
    from scheda.server import build_pool
    from scheda.server import serve as run_server

    if budget is not None and not budget > 0:
        raise UsageError(f"--budget must be a positive number of GB, got {budget}")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        console().print(
            f"[yellow]warning:[/yellow] listening on {host} without --api-key: "
            "anyone who can reach this port can use the models"
        )
    pool = build_pool(models or ["default"], engine, context, parallel, threads, budget, queue)

    def ready(url: str) -> None:
        names = ", ".join(pool.models)
        console().print(f"scheda serving {names}\n  studio: {url}\n  API:    {url}v1")
        sys.stdout.flush()

    run_server(pool, host, port, api_key, max_body, on_ready=ready)
