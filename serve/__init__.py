"""The code-aware QA service: a gateway (linker -> MedTok vectors -> projector -> the training
`build_inputs` -> prompt embeddings) in front of a stock vLLM OpenAI server (own venv, loopback)
or an in-process HF/peft model. Start it with `python scripts/serve_gateway.py CKPT` (`serve.server`),
ask with `python scripts/ask.py` (`serve.client`), measure with `python scripts/serve_check.py`
(`serve.bench`)."""
