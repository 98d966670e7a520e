"""Serving a model to other tools: an OpenAI-compatible HTTP server and the lm-evaluation-harness
bridge.

- `engine.py` — one model + tokenizer behind a single-worker queue: prompts (chat template or
  plain text), sampling parameters, stop strings, streaming, cancellation. No HTTP.
- `openai_api.py` — the FastAPI application (`/v1/chat/completions`, `/v1/completions`,
  `/v1/models`): request schemas, the API key, size and concurrency limits, errors.
- `server.py` — settings, the loopback / API-key rule, running under uvicorn.
- `lm_eval.py` — hands a loaded model object to lm-eval's own evaluator.

FastAPI and uvicorn are the optional extra `uld[serve]`; lm-eval is `uld[lm-eval]`.
"""
