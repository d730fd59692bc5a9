"""`scheda serve`: an OpenAI-compatible API and the web studio over the engines.

Importing this package imports nothing: FastAPI and uvicorn load only when a
server runs. `main` builds the model pool and runs the app under uvicorn;
`app` is the FastAPI app, `openai_api` and `studio_api` its routes, `pool`
the served models, `runner` one engine call per request. See docs/api.md.
"""
