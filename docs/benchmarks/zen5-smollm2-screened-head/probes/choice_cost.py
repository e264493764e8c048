"""The decoding loop's per-token work on a draft token's logits, in place (right after the token) and alone (probe)."""
import statistics, time, torch
from selfspec import DraftModel, SkipProfile
from selfspec.engine.runtime import Engine
from selfspec.engine.sampling import greedy_tokens
from selfspec.models.loading import load_model
torch.set_num_threads(2)
model = load_model(None, dtype="bfloat16").model
engine = Engine(model)
draft = DraftModel(model, SkipProfile(model.config.num_hidden_layers), weights="int4", kernels={"head": "int2-screened"})
n = 300
prompt = torch.randint(100, 40000, (1, n), generator=torch.Generator().manual_seed(0))
tok = torch.tensor([[1234]])
T = {}
def choose(logits):
    index = greedy_tokens(logits)
    confidence = torch.softmax(logits.float(), -1)[index]
    token = index.view(1, 1)
    return token, float(confidence) < 0.5
with torch.inference_mode():
    cache = engine.new_cache(n, 20, 17)
    engine.full(prompt, 0, cache, last_only=True)
    for rep in range(100):
        t = time.perf_counter(); logits = engine.draft(draft, tok, n, cache); t1 = time.perf_counter(); choose(logits); t2 = time.perf_counter()
        T.setdefault("draft", []).append(t1 - t); T.setdefault("choice in place", []).append(t2 - t1)
        cache.rollback(n)
        t = time.perf_counter(); choose(logits); T.setdefault("choice alone", []).append(time.perf_counter() - t)
ms = {k: statistics.median(v) * 1e3 for k, v in T.items()}
print(" ".join(f"{k} {v:.3f}" for k, v in ms.items()))
