"""The draft-exit rule's choice on a draft token's logits, in place right after the token: torch's operations
against sampling.greedy_choice, interleaved (probe)."""
import statistics, time, torch
from selfspec import DraftModel, SkipProfile
from selfspec.engine.runtime import Engine
from selfspec.engine.sampling import greedy_choice, greedy_tokens
from selfspec.models.loading import load_model
torch.set_num_threads(2)
model = load_model(None, dtype="bfloat16").model
engine = Engine(model)
draft = DraftModel(model, SkipProfile(model.config.num_hidden_layers), weights="int4", kernels={"head": "int2-screened"})
n = 300
prompt = torch.randint(100, 40000, (1, n), generator=torch.Generator().manual_seed(0))
tok = torch.tensor([[1234]])
def by_torch(logits):
    index = greedy_tokens(logits)
    return index.view(1, 1), float(torch.softmax(logits.float(), -1)[index]) < 0.5
def in_one_call(logits):
    index, confidence = greedy_choice(logits, True)
    return index.view(1, 1), confidence < 0.5
T = {}
with torch.inference_mode():
    cache = engine.new_cache(n, 20, 17)
    engine.full(prompt, 0, cache, last_only=True)
    for rep in range(100):
        for name, choose in (("torch", by_torch), ("one call", in_one_call)):
            logits = engine.draft(draft, tok, n, cache)
            t = time.perf_counter(); choose(logits); T.setdefault(name, []).append(time.perf_counter() - t)
            cache.rollback(n)
print(" ".join(f"{k} {statistics.median(v) * 1e3:.3f} ms" for k, v in T.items()))
