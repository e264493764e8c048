"""Where the int4 draft token's time outside products goes (probe)."""
import statistics, time, torch
from selfspec import DraftModel, SkipProfile
from selfspec.engine.runtime import Engine
from selfspec.engine.architectures import rolled_rotary
from selfspec.engine import native_layers
from selfspec.models.loading import load_model
torch.set_num_threads(2)
model = load_model(None, dtype="bfloat16").model
engine = Engine(model)
draft = DraftModel(model, SkipProfile(model.config.num_hidden_layers), weights="int4")
n = 300
prompt = torch.randint(100, 40000, (1, n), generator=torch.Generator().manual_seed(0))
tok = torch.tensor([[1234]])
walk = draft.walk
nat = walk._native
def med(f, reps=200):
    t = []
    for _ in range(reps):
        a = time.perf_counter(); f(); t.append(time.perf_counter() - a)
    return statistics.median(t) * 1e6
with torch.inference_mode():
    cache = engine.new_cache(n, 20, 17)
    engine.full(prompt, 0, cache, last_only=True)
    pos = torch.arange(n, n + 1)[None]
    hidden = walk.decoder.embed_tokens(tok)[0]
    rot = rolled_rotary(walk.decoder.rotary_emb(hidden, pos))
    print("positions arange", med(lambda: torch.arange(n, n + 1)[None]))
    print("embed", med(lambda: walk.decoder.embed_tokens(tok)[0]))
    print("rotary+rolled", med(lambda: rolled_rotary(walk.decoder.rotary_emb(hidden, pos))))
    print("final norm", med(lambda: walk.decoder.norm(hidden)))
    print("cache buffers lists", med(lambda: native_layers._cache_buffers(cache)))
    zero = [0] * len(walk._native_plan)
    def empty_call():
        nat(hidden, rot, None, n + 1, cache, zero); cache.rollback(n)
    print("native call, no layers", med(empty_call))
    def full_call():
        nat(hidden, rot, None, n + 1, cache, walk._native_plan); cache.rollback(n)
    print("native call, all layers", med(full_call, 60))
    def whole():
        engine.draft(draft, tok, n, cache); cache.rollback(n)
    print("engine.draft", med(whole, 60))
    h = walk.decoder.norm(hidden)
    print("head", med(lambda: walk.head(h), 60))
    logits = walk.head(h)
    print("topk 64", med(lambda: logits.topk(64)))
    print("argmax", med(lambda: logits.argmax()))
    print("rollback", med(lambda: cache.rollback(n)))
