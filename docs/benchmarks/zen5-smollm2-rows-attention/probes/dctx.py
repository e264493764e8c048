"""a draft token (int4) and a plain step against the context length. Usage: python dctx.py DTYPE (from the repository root, PYTHONPATH=$PWD)."""
import sys, time, statistics, torch
from selfspec.models.loading import load_model
from selfspec.profiles.draft_weights import build_draft
from selfspec.profiles.schema import SkipProfile
from selfspec.engine.architectures import num_layers
from selfspec.engine.cache import truncate
torch.set_num_threads(2)
lm = load_model(None, dtype=sys.argv[1])
draft, _ = build_draft(lm.model, SkipProfile.none(num_layers(lm.model), model=lm.name), "int4", max_draft=8)
print(draft.describe())
eng = lm.engine
ids = torch.randint(100, 20000, (1, 1100))
with torch.inference_mode(), eng.request_cache(1100, 40, 17) as cache:
    eng.full(ids[:, :1000], 0, cache, last_only=True)
    res = {}
    for rep in range(20):
        for ctx in (20, 100, 200, 400, 800):
            t = time.perf_counter(); eng.draft(draft, ids[:, ctx:ctx+1].view(1, 1), ctx, cache); res.setdefault(ctx, []).append(time.perf_counter() - t)
            t = time.perf_counter(); eng.full(ids[:, ctx:ctx+1], ctx, cache); res.setdefault(-ctx, []).append(time.perf_counter() - t)
    for ctx in (20, 100, 200, 400, 800):
        print(f"ctx {ctx}: d {statistics.median(res[ctx])*1e3:.2f} ms, f {statistics.median(res[-ctx])*1e3:.2f} ms")
