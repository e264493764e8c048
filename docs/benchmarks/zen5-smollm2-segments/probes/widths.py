"""A full forward of w positions after 300, interleaved, against one position (probe)."""
import statistics, time, torch
from selfspec.engine.runtime import Engine
from selfspec.models.loading import load_model
torch.set_num_threads(2)
model = load_model(None, dtype="bfloat16").model
engine = Engine(model)
n = 300
prompt = torch.randint(100, 40000, (1, n), generator=torch.Generator().manual_seed(0))
times = {}
with torch.inference_mode():
    cache = engine.new_cache(n, 20, 17)
    engine.full(prompt, 0, cache, last_only=True)
    for rep in range(25):
        for w in (1, 2, 5, 6, 7, 9, 10, 13, 17):
            toks = torch.randint(100, 40000, (1, w))
            t = time.perf_counter(); engine.full(toks, n, cache); times.setdefault(w, []).append(time.perf_counter() - t); cache.rollback(n)
ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
print(" ".join(f"{k}:{v:.2f}ms({v/ms[1]:.2f})" for k, v in ms.items()))
