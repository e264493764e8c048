"""engine.draft against its two C++ calls alone with prepared arguments, interleaved (probe)."""
import statistics, time, torch
from selfspec import DraftModel, SkipProfile
from selfspec.engine.runtime import Engine
from selfspec.engine.architectures import rolled_rotary
from selfspec.engine import native_layers
from selfspec.models.loading import load_model
torch.set_num_threads(2)
model = load_model(None, dtype="bfloat16").model
engine = Engine(model)
draft = DraftModel(model, SkipProfile(model.config.num_hidden_layers), weights="int4", kernels={"head": "int2-screened"})
n = 300
prompt = torch.randint(100, 40000, (1, n), generator=torch.Generator().manual_seed(0))
tok = torch.tensor([[1234]])
walk = draft.walk; nat = walk._native; head = draft.head.lm_head
T = {}
with torch.inference_mode():
    cache = engine.new_cache(n, 20, 17)
    engine.full(prompt, 0, cache, last_only=True)
    pos = torch.arange(n, n + 1)[None]
    hidden = walk.decoder.embed_tokens(tok)[0]
    rot = rolled_rotary(walk.decoder.rotary_emb(hidden, pos))
    bufs = native_layers._cache_buffers(cache)
    args = (hidden, *rot, n, walk._native_plan, nat._float_norms, nat._kinds, nat._weights, nat._scales, nat._float_biases, *bufs, *nat._buffers_shape)
    normed = torch.randn(1, 576).bfloat16()
    for rep in range(150):
        t = time.perf_counter(); engine.draft(draft, tok, n, cache); T.setdefault("engine.draft", []).append(time.perf_counter() - t); cache.rollback(n)
        t = time.perf_counter(); nat._extension.run_draft_in_buffers(*args); head(normed); T.setdefault("two C++ calls", []).append(time.perf_counter() - t); cache.rollback(n)
ms = {k: statistics.median(v) * 1e3 for k, v in T.items()}
print(" ".join(f"{k} {v:.3f}" for k, v in ms.items()))
