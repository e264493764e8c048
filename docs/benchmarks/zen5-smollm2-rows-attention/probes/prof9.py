"""v(n) at a context, then torch.profiler of a 1- and a 5-row forward. Usage: python prof9.py DTYPE CONTEXT (from the repository root, PYTHONPATH=$PWD)."""
import sys, time, statistics, torch
from selfspec.models.loading import load_model
from selfspec.engine.cache import truncate
torch.set_num_threads(2)
lm = load_model(None, dtype=sys.argv[1])
eng = lm.engine
ctx = int(sys.argv[2])
ids = torch.randint(100, 20000, (1, ctx + 20))
with torch.inference_mode(), eng.request_cache(ctx + 20, 20, 17) as cache:
    eng.full(ids[:, :ctx], 0, cache, last_only=True)
    def one(): eng.full(ids[:, ctx:ctx + 1], ctx, cache); truncate(cache, ctx)
    def nine(w): eng.verify(ids[:, ctx:ctx + w], ctx, cache); truncate(cache, ctx)
    ts = {w: [] for w in (1, 2, 5, 9, 13, 17)}
    for rep in range(25):
        for w in ts:
            t = time.perf_counter(); one() if w == 1 else nine(w); ts[w].append(time.perf_counter() - t)
    f = statistics.median(ts[1])
    print(f"f {f*1e3:.2f} ms  " + " ".join(f"v({w-1})={statistics.median(x)/f:.3f}" for w, x in ts.items()))
    from torch.profiler import profile, ProfilerActivity
    for w in (1, 5):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(10): one() if w == 1 else nine(w)
        print(f"=== width {w}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=22, max_name_column_width=40))
