"""Generated answers, several at once.

For a GGUF with llama-cpp-python installed (the eval extra), greedy answers come from
`BatchGenerator` (generation_llamacpp.py): the few-shot prefix decoded once and shared by
every question in flight, `model.parallel` of them decoded together. Otherwise (an HF
folder, sampling other than greedy) the prompts go to the engine's parallel slots together:
llama.cpp decodes the sequences of its slots in one batch (continuous
batching), so `model.parallel` questions in flight answer in little more time
than one. Results come back as each finishes, in any order; a consumer that
stops early (an error, an interrupted run) cancels what has not started and
cuts what is decoding, so no thread is left generating.

Batching is not bit-reproducible in llama.cpp (a prompt's logits depend a
little on what it is batched with), so with more than one slot a near tie
between two tokens can go either way from run to run; one slot on a freshly
loaded model reproduces its generations exactly. The slot count is therefore
part of a generated task's run config (see runner.open_run).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import closing

from scheda.engines.base import Generation
from scheda.evaluation.base import EvalModel, Item
from scheda.sampling import Sampling


def generate_all(
    items: list[Item],
    model: EvalModel,
    prompt: Callable[[Item], str],
    sampling: Sampling,
) -> Iterator[tuple[Item, Generation]]:
    """Each item with the engine's answer to its prompt, as soon as that answer is done."""
    if not items:
        return
    generator = model.generator()
    if generator is not None and generator.handles(sampling):
        texts = [prompt(item) for item in items]
        # Closed at once when the consumer stops early: the generator frees its context.
        with closing(generator.generate(texts, sampling)) as answers:
            for index, generation in answers:
                yield items[index], generation
        return
    engine = model.engine
    stop = threading.Event()

    def answer(item: Item) -> Generation:
        return engine.generate(prompt(item), sampling, cancel=stop)

    with ThreadPoolExecutor(max_workers=max(1, model.parallel)) as pool:
        futures = {pool.submit(answer, item): item for item in items}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            # Stopped early: drop what has not started, cut what is decoding.
            for future in futures:
                future.cancel()
            stop.set()
