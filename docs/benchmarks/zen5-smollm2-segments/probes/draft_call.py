"""engine.draft against its one C++ call with the same arguments (probe)."""
import statistics, time, torch
from selfspec import DraftModel, SkipProfile
from selfspec.engine.runtime import Engine
from selfspec.engine.native_layers import _cache_buffers
from selfspec.models.loading import load_model
torch.set_num_threads(2)
model = load_model(None, dtype="bfloat16").model
engine = Engine(model)
L = model.config.num_hidden_layers
draft = DraftModel(model, SkipProfile(L), weights="int4")
n = 300
prompt = torch.randint(100, 40000, (1, n), generator=torch.Generator().manual_seed(0))
tok = torch.tensor([[1234]])
path = draft.walk._token_path
plan = draft.walk._native_plan
times = {}
with torch.inference_mode():
    cache = engine.new_cache(n, 20, 17)
    engine.full(prompt, 0, cache, last_only=True)
    engine.draft(draft, tok, n, cache); cache.rollback(n)
    tables = path._tables
    bufs = _cache_buffers(cache)
    for rep in range(300):
        t = time.perf_counter(); engine.draft(draft, tok, n, cache); times.setdefault("engine.draft", []).append(time.perf_counter() - t); cache.rollback(n)
        t = time.perf_counter(); path._token.logits(tok, n, *tables, plan, *bufs); times.setdefault("C++ call", []).append(time.perf_counter() - t); cache.rollback(n)
        t = time.perf_counter(); _cache_buffers(cache); times.setdefault("_cache_buffers", []).append(time.perf_counter() - t)
print(" ".join(f"{k} {statistics.median(v)*1e3:.3f} ms" for k, v in times.items()))
