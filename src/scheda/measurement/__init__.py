"""What is measured here, in processes of its own: `scheda bench`'s speeds and the memory
llama.cpp really uses.
"""
