"""SmolLM2 bf16, one token at 300 positions: the int4 draft's token against the full step, and where the draft's time
goes by the profiler's top-level calls (from the repository root, PYTHONPATH=$PWD)."""
import statistics, time, torch
from torch.profiler import profile, ProfilerActivity
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
times = {}
with torch.inference_mode():
    cache = engine.new_cache(n, 20, 17)
    engine.full(prompt, 0, cache, last_only=True)
    for rep in range(40):
        t = time.perf_counter(); engine.full(tok, n, cache); times.setdefault("step", []).append(time.perf_counter() - t); cache.rollback(n)
        t = time.perf_counter(); engine.draft(draft, tok, n, cache); times.setdefault("draft", []).append(time.perf_counter() - t); cache.rollback(n)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(20):
            engine.draft(draft, tok, n, cache); cache.rollback(n)
ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
print(f"step {ms['step']:.2f} ms, draft {ms['draft']:.2f} ms, c {ms['draft'] / ms['step']:.3f}")
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
