"""A draft token's walk step by step with clocks (probe): which Python/ATen part costs what."""
import statistics, time, torch
from contextlib import nullcontext
from selfspec import DraftModel, SkipProfile
from selfspec.engine.runtime import Engine
from selfspec.engine.architectures import rolled_rotary
from selfspec.engine.native_layers import cache_ready
from selfspec.models.loading import load_model
torch.set_num_threads(2)
model = load_model(None, dtype="bfloat16").model
engine = Engine(model)
draft = DraftModel(model, SkipProfile(model.config.num_hidden_layers), weights="int4", kernels={"head": "int2-screened"})
n = 300
prompt = torch.randint(100, 40000, (1, n), generator=torch.Generator().manual_seed(0))
tok = torch.tensor([[1234]])
w = draft.walk
T = {}
def lap(name, t0):
    t = time.perf_counter(); T.setdefault(name, []).append(t - t0); return t
with torch.inference_mode():
    cache = engine.new_cache(n, 20, 17)
    engine.full(prompt, 0, cache, last_only=True)
    for rep in range(150):
        t0 = time.perf_counter(); start = t0
        position_ids = engine._positions(n, 1); t0 = lap("positions", t0)
        hidden = w.decoder.embed_tokens(tok)[0]; t0 = lap("embed", t0)
        e = w.decoder.rotary_emb(hidden, position_ids); t0 = lap("rotary module", t0)
        e = rolled_rotary(e); t0 = lap("rolled", t0)
        attended = w._attended_keys(position_ids, cache); t0 = lap("attended", t0)
        mask = w._mask(0, position_ids, cache, hidden.dtype, {}, False, attended); t0 = lap("mask", t0)
        ok = cache_ready(cache); t0 = lap("cache ready", t0)
        with cache.attending(attended):
            out = w._native(hidden, e, mask, attended, cache, w._native_plan)
        t0 = lap("native", t0)
        normed = w.decoder.norm(out); t0 = lap("final norm", t0)
        logits = w.head(normed); t0 = lap("head", t0)
        T.setdefault("sum", []).append(t0 - start)
        cache.rollback(n)
        t = time.perf_counter(); engine.draft(draft, tok, n, cache); T.setdefault("engine.draft", []).append(time.perf_counter() - t); cache.rollback(n)
ms = {k: statistics.median(v) * 1e3 for k, v in T.items()}
print(" ".join(f"{k} {v:.3f}" for k, v in ms.items()))
