"""One category's prompts, the int4 draft with copies and alone, step by step (docs/BENCHMARKS.md, "16-bit
verifications exact by rows"). Usage, from the repository root:

    PYTHONPATH=$PWD python docs/benchmarks/zen5-smollm2-exact-rows/probes/steps_by_category.py DTYPE REPS BENCH_JSON CATEGORY

Each step prints as p (a plain step) or [v]<copies>c<drafts>d:<kept> (v: copies vetted by the draft's first token).
"Modelled" prices the steps at BENCH_JSON's fixed c and v(n). NEW_TOKENS sets the tokens a prompt (default 64).
"""
import collections, json, os, statistics, sys
import torch
from selfspec.bench.prompts import builtin_suite
from selfspec.engine.decoding import autoregressive, self_speculative
from selfspec.engine.settings import DraftSettings
from selfspec.models.loading import load_model
from selfspec.profiles.draft_weights import build_draft
from selfspec.profiles.schema import SkipProfile
torch.set_num_threads(2)
dtype, reps, bench, category = sys.argv[1], int(sys.argv[2]), json.load(open(sys.argv[3])), sys.argv[4]
costs = next(v for k, v in bench["overhead"]["methods"].items() if "+context" in k)
C, V = costs["c"], {int(n): x for n, x in costs["v"].items()}
TOKENS = int(os.environ.get("NEW_TOKENS", 64))
def modelled(records):
    total = 0.0
    for r in records[1:]:
        own = r.drafted - r.copied
        reads = r.copied and own and not r.vetted
        total += 1.0 if r.kind == "decode" else V.get(r.drafted, V[max(V)]) + C * (own + r.vetted) + 0.27 * C * r.copied * bool(reads)
    return total
lm = load_model(None, dtype=dtype)
draft, _ = build_draft(lm.model, SkipProfile.none(lm.model.config.num_hidden_layers, model=lm.name), "int4", max_draft=8)
carried = {"copies": None, "alone": None}
prompts = [p for p in builtin_suite(3) if p.category == category]
for prompt in prompts:
    ids = lm.encode_chat(prompt.messages)
    for rep in range(reps):
        for name, context in (("copies", 16), ("alone", 0)):
            draft.carried = carried[name]
            recs = list(self_speculative(lm.model, ids, draft, TOKENS, engine=lm.engine, settings=DraftSettings(max_draft=8, context_tokens=context)))
            carried[name] = draft.carried
            steps = recs[1:]
            desc = " ".join(("p" if r.kind == "decode" else f"{'v' if r.vetted else ''}{r.copied}c{r.drafted - r.copied}d:{r.accepted}") for r in steps)
            n = sum(len(r.token_ids) for r in steps)
            print(f"{prompt.category} p{prompts.index(prompt)} r{rep} {name:6s} tok {n} steps {len(steps)} wall {sum(r.seconds for r in steps)*1e3:.0f}ms modelled {modelled(recs):.1f}  {desc}")
