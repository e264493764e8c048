"""The int4 draft's token at 300 positions in a loop, for perf (from the repository root, PYTHONPATH=$PWD)."""
import torch
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
with torch.inference_mode():
    cache = engine.new_cache(n, 20, 17)
    engine.full(prompt, 0, cache, last_only=True)
    for _ in range(30): engine.draft(draft, tok, n, cache); cache.rollback(n)
    import time; t = time.time()
    while time.time() - t < 40:
        engine.draft(draft, tok, n, cache); cache.rollback(n)
