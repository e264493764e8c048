"""Time the int4 draft token's parts: native layers, head, rest (probe)."""
import statistics, time, torch, sys
from selfspec import DraftModel, SkipProfile
from selfspec.engine.runtime import Engine
from selfspec.models.loading import load_model

torch.set_num_threads(2)
model = load_model(None, dtype="bfloat16").model
engine = Engine(model)
draft = DraftModel(model, SkipProfile(model.config.num_hidden_layers), weights="int4")
n = 300
prompt = torch.randint(100, 40000, (1, n), generator=torch.Generator().manual_seed(0))
tok = torch.tensor([[1234]])
T = {}
class Timed:
    def __init__(self, f, key): self.f, self.key = f, key
    def __getattr__(self, a): return getattr(self.f, a)
    def __call__(self, *a, **k):
        t = time.perf_counter(); r = self.f(*a, **k); T.setdefault(self.key, []).append(time.perf_counter() - t); return r
walk = draft.walk
walk._native = Timed(walk._native, "layers")
walk.head = Timed(walk.head, "head")
walk.decoder.norm  # final norm
times = {}
with torch.inference_mode():
    cache = engine.new_cache(n, 20, 17)
    engine.full(prompt, 0, cache, last_only=True)
    for rep in range(60):
        t = time.perf_counter(); engine.full(tok, n, cache); times.setdefault("step", []).append(time.perf_counter() - t); cache.rollback(n)
        t = time.perf_counter(); engine.draft(draft, tok, n, cache); times.setdefault("draft", []).append(time.perf_counter() - t); cache.rollback(n)
ms = {k: statistics.median(v) * 1e3 for k, v in (times | T).items()}
print(draft.lowbit.kernels); print(" ".join(f"{k} {v:.3f}" for k, v in ms.items()), f"c {ms['draft']/ms['step']:.3f}")
