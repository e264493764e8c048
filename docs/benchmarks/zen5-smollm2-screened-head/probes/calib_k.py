import torch
from selfspec import DraftModel, SkipProfile
from selfspec.engine import lowbit
from selfspec.models.loading import load_model
from selfspec.profiles.draft_weights import calibration_sequence
from selfspec.profiles.ranking import agreement, full_choices
from selfspec.profiles.calibration import builtin_prompts
from selfspec.bench.prompts import builtin_suite
torch.set_num_threads(2)
lm = load_model(None, dtype="bfloat16"); model = lm.model
L = model.config.num_hidden_layers
none = SkipProfile(L)
drafts = {"int8": DraftModel(model, none, weights="int4", kernels={"head": "int8-int8dot"})}
for k in (64, 256, 1024):
    lowbit.SCREEN_CANDIDATES = k
    drafts[f"screen{k}"] = DraftModel(model, none, weights="int4", kernels={"head": "int2-screened"})
texts = [lm.encode(t) for t in builtin_prompts()] + [lm.encode_chat(list(p.messages)) for p in builtin_suite(per_category=1)]
tot = {n: 0.0 for n in drafts}
with torch.inference_mode():
    for i, ids in enumerate(texts):
        seq = calibration_sequence(model, ids); targets = full_choices(model, [seq])
        a = {n: agreement(model, [seq], targets, d, skip=len(ids) - 1) for n, d in drafts.items()}
        for n in a: tot[n] += a[n] / len(texts)
        print(i, " ".join(f"{n}: {v:.3f}" for n, v in a.items()), flush=True)
print("mean", " ".join(f"{n}: {v:.4f}" for n, v in tot.items()))
