"""SmolLM2 bf16, one token at 300 positions: the engine's step, against the C++ layer loop alone, the final norm and
head, and the products alone called from C++ (from the repository root, PYTHONPATH=$PWD)."""
import statistics, time, torch
from selfspec.engine.runtime import Engine
from selfspec.engine import walk as walk_module
from selfspec.models.loading import load_model

torch.set_num_threads(2)
model = load_model(None, dtype="bfloat16").model
engine = Engine(model)
walk = engine.walk
n = 300
prompt = torch.randint(100, 40000, (1, n), generator=torch.Generator().manual_seed(0))
tok = torch.tensor([[1234]])
captured = {}
native = walk._native
def spy(*args):
    captured["args"] = args
    return native(*args)
walk._native = spy
times = {}
with torch.inference_mode():
    cache = engine.new_cache(n, 20, 17)
    engine.full(prompt, 0, cache, last_only=True)
    engine.full(tok, n, cache); cache.rollback(n)
    args = captured["args"]
    hidden = torch.randn(1, 1, 576).to(torch.bfloat16)
    head = walk.head; norm = walk.decoder.norm
    for rep in range(30):
        t = time.perf_counter(); engine.full(tok, n, cache); times.setdefault("step", []).append(time.perf_counter() - t); cache.rollback(n)
        with cache.attending(n + 1):
            t = time.perf_counter(); native(*args); times.setdefault("c++ layers", []).append(time.perf_counter() - t)
        cache.rollback(n)
        t = time.perf_counter(); head(norm(hidden)); times.setdefault("norm + head", []).append(time.perf_counter() - t)
for k, v in times.items():
    print(f"{k}: {statistics.median(v) * 1e3:.2f} ms")
