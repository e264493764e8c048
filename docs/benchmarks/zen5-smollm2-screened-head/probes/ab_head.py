"""Interleaved in one process: the int4 draft token with the int8 head vs the screened head, and the full step (probe)."""
import statistics, time, torch, sys
from selfspec import DraftModel, SkipProfile
from selfspec.engine.runtime import Engine
from selfspec.engine.decoding import draft_tokens
from selfspec.models.loading import load_model
torch.set_num_threads(2)
model = load_model(None, dtype="bfloat16").model
engine = Engine(model)
L = model.config.num_hidden_layers
drafts = {h: DraftModel(model, SkipProfile(L), weights="int4", kernels={"head": h}) for h in ("int8-int8dot", "int2-screened", "int2-screened-avx2")}
n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
prompt = torch.randint(100, 40000, (1, n), generator=torch.Generator().manual_seed(0))
tok = torch.tensor([[1234]])
times = {}
with torch.inference_mode():
    cache = engine.new_cache(n, 20, 17)
    engine.full(prompt, 0, cache, last_only=True)
    for rep in range(80):
        t = time.perf_counter(); engine.full(tok, n, cache); times.setdefault("step", []).append(time.perf_counter() - t); cache.rollback(n)
        for name, d in drafts.items():
            t = time.perf_counter(); engine.draft(d, tok, n, cache); times.setdefault(name, []).append(time.perf_counter() - t); cache.rollback(n)
ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
print(f"n {n}", " ".join(f"{k} {v:.3f} ms (c {v / ms['step']:.3f})" for k, v in ms.items()))
