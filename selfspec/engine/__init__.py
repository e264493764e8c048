"""The decoding engine: the layer-skipping draft, the shared KV cache, prefill/decode/draft/verify,
sampling and acceptance rules, draft-exit rules, per-step records, and the CPU verification kernel."""
