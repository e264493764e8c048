"""Teacher-forced: where the context proposes a copy, how often the int4 draft's top token equals the first copy,
and how often that copy is then the full model's token (docs/BENCHMARKS.md, "Copies vetted by the draft's first
token"). The full model's tokens are the autoregressive outputs a bench.json recorded. Usage, from the repository
root:

    PYTHONPATH=$PWD python docs/benchmarks/zen5-smollm2-vetted/probes/copy_agreement.py BENCH_JSON
"""
import collections
import json
import sys

import torch

from selfspec.bench.prompts import builtin_suite
from selfspec.engine.context import ContextIndex
from selfspec.models.loading import load_model
from selfspec.profiles.draft_weights import build_draft
from selfspec.profiles.schema import SkipProfile

torch.set_num_threads(2)
bench = json.load(open(sys.argv[1]))
lm = load_model(None, dtype=bench["dtype"])
draft, _ = build_draft(lm.model, SkipProfile.none(lm.model.config.num_hidden_layers, model=lm.name), "int4", max_draft=8)
outputs = bench["outputs"]["autoregressive"]
counts = collections.defaultdict(collections.Counter)
for prompt, output in zip(builtin_suite(len(outputs) // 6), outputs):
    ids = lm.encode_chat(prompt.messages)
    ids = ids[0].tolist() if hasattr(ids, "shape") else list(ids)
    assert len(ids) == output["prompt_tokens"] and prompt.category == output["category"]
    sequence = ids + output["tokens"]
    with torch.inference_mode(), lm.engine.request_cache(len(sequence), 1) as cache:
        logits = draft(torch.tensor(sequence)[None], torch.arange(len(sequence))[None], cache)[0]
    chosen = logits.argmax(-1)
    chosen = chosen if draft.vocabulary is None else draft.vocabulary[chosen]
    context = ContextIndex(ids)
    for j, token in enumerate(output["tokens"]):
        proposal, _ = context.propose_matched(16)
        if proposal:
            agree = int(chosen[len(ids) + j - 1]) == proposal[0]
            for key in (prompt.category, "all"):
                c = counts[key]
                c["n"] += 1
                c["kept"] += proposal[0] == token
                c["agree"] += agree
                c["agree kept"] += agree and proposal[0] == token
        context.extend([token])
for key, c in counts.items():
    print(f"{key:14s} copies proposed {c['n']:3d}  first copy kept {c['kept'] / c['n']:.2f}  draft agrees "
          f"{c['agree'] / c['n']:.2f}  kept where it agrees {c['agree kept'] / max(1, c['agree']):.2f}  kept where "
          f"it does not {(c['kept'] - c['agree kept']) / max(1, c['n'] - c['agree']):.2f}")
