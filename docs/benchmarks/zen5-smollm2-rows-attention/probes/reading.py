"""the int4 draft's first forward over 1 + m tokens (reading copies) against one token, and c. Usage: python reading.py DTYPE (from the repository root, PYTHONPATH=$PWD)."""
"""Time the int4 draft's first forward over 1 + m tokens (reading m copies) against one drafted token."""
import sys, time, statistics, torch
from selfspec.models.loading import load_model
from selfspec.profiles.draft_weights import build_draft
from selfspec.profiles.schema import SkipProfile
from selfspec.engine.architectures import num_layers
from selfspec.engine.cache import truncate
torch.set_num_threads(2)
lm = load_model(None, dtype=sys.argv[1])
draft, _ = build_draft(lm.model, SkipProfile.none(num_layers(lm.model), model=lm.name), "int4", max_draft=8)
ids = torch.randint(100, 20000, (1, 300))
eng = lm.engine
with torch.inference_mode(), eng.request_cache(300, 40, 17) as cache:
    eng.full(ids[:, :200], 0, cache, last_only=True)
    times = {m: [] for m in (0, 1, 2, 4, 8, 12, 16)}
    for rep in range(30):
        for m in times:
            read = ids[:, 200:201 + m]
            t = time.perf_counter()
            if m == 0:
                eng.draft(draft, read.view(1, 1), 200, cache)
            else:
                draft(read, torch.arange(200, 201 + m)[None], cache)
            times[m].append(time.perf_counter() - t)
            truncate(cache, 200)
    d = statistics.median(times[0])
    print(f"d = {d*1e3:.2f} ms; " + " ".join(f"r({m})/d={statistics.median(ts)/d:.2f}" for m, ts in times.items()))
    f = []
    for rep in range(30):
        t = time.perf_counter(); eng.full(ids[:, 200:201], 200, cache); f.append(time.perf_counter() - t); truncate(cache, 200)
    print(f"f = {statistics.median(f)*1e3:.2f} ms, c = {d/statistics.median(f):.3f}")
