"""One-process A/B of context copies, interleaved per prompt and repetition (docs/BENCHMARKS.md, "Copies vetted
by the draft's first token"). Usage, from the repository root:

    PYTHONPATH=$PWD python docs/benchmarks/zen5-smollm2-vetted/probes/ab_copies.py DTYPE REPS BENCH_JSON VARIANT...

VARIANT: copies (vetting on), unvetted (vetted plans never offered), alone (no copies), alone-again (the same as
alone: shows the noise between two identical configurations). Each variant keeps its own controller memory, as
bench's methods do. Besides wall-clock speedups it prints a "modelled" ratio: each run's steps priced at the
fixed c and v(n) of BENCH_JSON (its +context method), so the host's noise drops out but not the decisions'.
NEW_TOKENS in the environment sets the tokens generated per prompt (default 64).
"""
import collections
import json
import os
import statistics
import sys

import torch

import selfspec.engine.controller as controller
from selfspec.bench.prompts import CATEGORIES, builtin_suite
from selfspec.engine.decoding import autoregressive, self_speculative
from selfspec.engine.settings import DraftSettings
from selfspec.models.loading import load_model
from selfspec.profiles.draft_weights import build_draft
from selfspec.profiles.schema import SkipProfile

torch.set_num_threads(2)
dtype, reps, bench, names = sys.argv[1], int(sys.argv[2]), json.load(open(sys.argv[3])), sys.argv[4:]
costs = next(v for k, v in bench["overhead"]["methods"].items() if "+context" in k)
C, V = costs["c"], {int(n): x for n, x in costs["v"].items()}
TOKENS = int(os.environ.get("NEW_TOKENS", 64))
VARIANTS = {"copies": (16, True), "unvetted": (16, False), "alone": (0, True), "alone-again": (0, True)}


def modelled(records) -> float:
    """Plain steps 1, verifications v(width), each draft forward c, a read of m copies c (1 + 0.27 m)."""
    total = 0.0
    for r in records[1:]:
        own = r.drafted - r.copied
        reads = r.copied and own and not r.vetted
        total += 1.0 if r.kind == "decode" else V.get(r.drafted, V[max(V)]) + C * (own + r.vetted) + 0.27 * C * r.copied * bool(reads)
    return total


lm = load_model(None, dtype=dtype)
draft, _ = build_draft(lm.model, SkipProfile.none(lm.model.config.num_hidden_layers, model=lm.name), "int4", max_draft=8)
offered = controller.vetted_plans
carried = {name: None for name in names}
totals = collections.defaultdict(float)  # (variant, category, "s" | "m" | "n") -> sum over prompts of medians
for prompt in builtin_suite(3):
    ids = lm.encode_chat(prompt.messages)
    samples = collections.defaultdict(list)
    for _ in range(reps):
        for name in names + ["ar"]:
            if name == "ar":
                records = list(autoregressive(lm.model, ids, TOKENS, engine=lm.engine))
            else:
                context, vetting = VARIANTS[name]
                controller.vetted_plans = offered if vetting else (lambda *args: [])
                draft.carried = carried[name]
                records = list(self_speculative(lm.model, ids, draft, TOKENS, engine=lm.engine,
                                                settings=DraftSettings(max_draft=8, context_tokens=context)))
                carried[name] = draft.carried
            samples[name].append((sum(r.seconds for r in records[1:]), modelled(records),
                                  sum(len(r.token_ids) for r in records[1:])))
    for name, runs in samples.items():
        for i, key in enumerate("smn"):
            totals[(name, prompt.category, key)] += statistics.median(run[i] for run in runs)
print(dtype, bench["machine"]["device"], "reps", reps, "tokens", TOKENS)
for category in CATEGORIES + ("all",):
    def rate(name, key):
        cats = CATEGORIES if category == "all" else (category,)
        return sum(totals[(name, c, "n")] for c in cats) / sum(totals[(name, c, key)] for c in cats)
    cells = [f"{name} {rate(name, 's') / rate('ar', 's'):.2f}x" for name in names]
    against = [f"{name}/{names[-1]} {rate(name, 's') / rate(names[-1], 's') - 1:+.1%} (modelled "
               f"{rate(name, 'm') / rate(names[-1], 'm') - 1:+.1%})" for name in names[:-1]]
    print(f"{category:14s}", " ".join(cells), " ", " ".join(against))
