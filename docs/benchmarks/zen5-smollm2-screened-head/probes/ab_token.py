"""Interleaved in one process: a draft token through the one-call token path against the walk's way (probe)."""
import copy, statistics, time, torch, sys
from selfspec import DraftModel, SkipProfile
from selfspec.engine.runtime import Engine
from selfspec.models.loading import load_model
torch.set_num_threads(2)
model = load_model(None, dtype="bfloat16").model
engine = Engine(model)
L = model.config.num_hidden_layers
one_call = DraftModel(model, SkipProfile(L), weights="int4", kernels={"head": "int2-screened"})
walked = copy.copy(one_call); walked.walk = copy.copy(one_call.walk); walked.walk._token_path = None  # same weights
int8_head = DraftModel(model, SkipProfile(L), weights="int4", kernels={"head": "int8-int8dot"})
int8_walked = copy.copy(int8_head); int8_walked.walk = copy.copy(int8_head.walk); int8_walked.walk._token_path = None
drafts = {"one call": one_call, "walk": walked, "int8 head, one call": int8_head, "int8 head, walk": int8_walked}
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
    a = engine.draft(one_call, tok, n, cache); cache.rollback(n)
    b = engine.draft(walked, tok, n, cache); cache.rollback(n)
    print("max |one call - walk| logits:", float((a.float() - b.float()).abs().max()), "argmax", int(a.argmax()), int(b.argmax()))
ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
print(f"n {n}", " ".join(f"{k} {v:.3f} ms (c {v / ms['step']:.3f})" for k, v in ms.items()))
