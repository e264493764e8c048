import torch
from selfspec import DraftModel, SkipProfile
from selfspec.models.loading import load_model
from selfspec.profiles.draft_weights import calibration_sequence
from selfspec.profiles.ranking import agreement, full_choices
from selfspec.profiles.calibration import builtin_prompts
torch.set_num_threads(2)
lm = load_model(None, dtype="bfloat16"); model = lm.model
L = model.config.num_hidden_layers
prof, none = SkipProfile(L, attn=[7, 26], mlp=[13]), SkipProfile(L)
drafts = {}
for head in ("int8-int8dot", "int2-screened"):
    d = DraftModel(model, none, weights="int4", kernels={"head": head})
    drafts[f"sn {head}"], drafts[f"skip {head}"] = d, d.with_profile(prof)
with torch.inference_mode():
    for i, text in enumerate(builtin_prompts()):
        ids = lm.encode(text); seq = calibration_sequence(model, ids); targets = full_choices(model, [seq])
        print(i, " ".join(f"{n}: {agreement(model, [seq], targets, d, skip=len(ids) - 1):.3f}" for n, d in drafts.items()), flush=True)
