"""Record the bench suite's greedy transcripts with the int4 draft's K tokens at every position (bench/replay.py).
Usage, from the repository root:

    PYTHONPATH=$PWD python docs/benchmarks/zen5-smollm2-replay/probes/record_transcripts.py DTYPE TOKENS OUT.json
"""
import json, sys, time
import torch
from selfspec.bench.prompts import builtin_suite
from selfspec.bench.replay import record_transcript
from selfspec.engine.architectures import num_layers
from selfspec.models.loading import load_model
from selfspec.profiles.draft_weights import build_draft
from selfspec.profiles.schema import SkipProfile
torch.set_num_threads(2)
lm = load_model(None, dtype=sys.argv[1])
draft, _ = build_draft(lm.model, SkipProfile.none(num_layers(lm.model), model=lm.name), "int4", max_draft=8)
out = []
for p in builtin_suite(None):
    t = time.perf_counter()
    tr = record_transcript(lm.engine, draft, lm.encode_chat(p.messages), int(sys.argv[2]), 8)
    first = sum(d[0] == x for d, x in zip(tr.drafts[1:], tr.text[1:])) / max(1, len(tr.text) - 1)
    print(f"{p.category:14s} {len(tr.text):4d} tokens, the draft's first token right {first:.2f} ({time.perf_counter() - t:.1f} s)")
    out.append({"category": p.category, **tr._asdict()})
json.dump(out, open(sys.argv[3], "w"))
