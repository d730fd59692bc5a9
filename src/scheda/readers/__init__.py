"""Pure readers: a model file or folder in, a `ModelSpec` out, no tensors loaded."""
