"""Top-1 agreement of fake-quantised int4 drafts with the bf16 model over the bench prompts' greedy text: float16 group
scales and zeros (today) against 8-bit codes under a float16 scale per row (probe; argument: prompts a category)."""
import copy, sys, torch
from selfspec.bench.prompts import builtin_suite
from selfspec.models.loading import load_model
from selfspec.engine.lowbit import quantize_int4, dequantize_int4, quantize_int8, quantize_int4_coded, dequantize_int4_coded
torch.set_num_threads(2)
loaded = load_model(None, dtype="bfloat16")
model, tok = loaded.model, loaded.tokenizer
seqs = []
with torch.inference_mode():
    for p in builtin_suite(per_category=int(sys.argv[1]) if len(sys.argv) > 1 else 1):
        ids = tok.apply_chat_template(list(p.messages), add_generation_prompt=True, return_tensors="pt")
        ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
        out = model.generate(ids, max_new_tokens=96, do_sample=False)
        seqs.append((ids.shape[1], out))
print("generated", len(seqs), flush=True)
def q4_halves(w, g=32):
    q, s, z = quantize_int4(w, g)
    return dequantize_int4(q, s.half().float(), z.half().float())
def q4_codes(w, g=32, zero_bits=8):
    x = w.detach().float(); o, i = x.shape
    groups = x.reshape(o, i // g, g)
    low, high = groups.amin(-1), groups.amax(-1)
    scale = (high - low).clamp(min=1e-8) / 15
    zero = low + 8 * scale
    row_scale = (scale.amax(-1) / 255).half().float()
    s = torch.ceil(scale / row_scale[:, None]).clamp(1, 255) * row_scale[:, None]
    top = 2 ** (zero_bits - 1) - 1
    row_zero = (zero.abs().amax(-1) / top).clamp(min=1e-12).half().float()
    z = torch.round(zero / row_zero[:, None]).clamp(-top, top) * row_zero[:, None]
    q = torch.round((groups - z[..., None]) / s[..., None] + 8).clamp(0, 15)
    return ((q - 8) * s[..., None] + z[..., None]).reshape(o, i)
f32 = copy.deepcopy(model).float()
head_w = f32.lm_head.weight.detach().clone()
q, s = quantize_int8(head_w); head8 = q.float() * s[:, None]
def variant(layer_q):
    m = copy.deepcopy(f32)
    m.lm_head.weight = torch.nn.Parameter(head8.clone())
    with torch.no_grad():
        for mod in m.model.layers.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(layer_q(mod.weight))
    return m
def agreement(m):
    hit = tot = 0
    with torch.inference_mode():
        for n, out in seqs:
            pred = m(out).logits[0, n - 1:-1].argmax(-1)
            ref = out[0, n:]
            hit += (pred == ref).sum().item(); tot += ref.numel()
    return hit / tot
for name, lq in {"float16 scales and zeros (today)": q4_halves, "8-bit codes, per-row float16 scales": q4_codes,
                 "8-bit scale codes, 6-bit zero codes": lambda w: q4_codes(w, zero_bits=6),
                 "lowbit.quantize_int4_coded (float32 steps, as built)": lambda w: dequantize_int4_coded(*quantize_int4_coded(w, 32))}.items():
    print(f"{name}: {agreement(variant(lq)):.4f}", flush=True)
