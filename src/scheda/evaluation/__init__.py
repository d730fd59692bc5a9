"""`scheda eval`: the spec sheet's benchmarks, run on your own model.

`scorer` gives exact log-likelihoods (llama.cpp for GGUF, transformers for HF
folders); `base` defines tasks, items and results; each task module (mmlu,
multiple_choice, gsm8k, humaneval) turns items into results; `store` keeps
every result in SQLite as it comes, so a run resumes where it stopped.
"""
