"""Files made or fetched: `pull` from the Hub, `convert` to an HF folder, the GGUF writer and
`quantize`.
"""
