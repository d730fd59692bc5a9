"""Talking to a model from the terminal: the chat's turns and the fitting of a prompt and its
history into the context.
"""
