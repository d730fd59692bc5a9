"""How a model's tokenizer splits a text: llama.cpp's BPE rebuilt from a GGUF's vocabulary, and
the pieces shown.
"""
