"""(From the repository root, PYTHONPATH=$PWD; argument: prompts a category.) Top-1 agreement of fake-quantised drafts with the bf16 model over the bench prompts' greedy text (probe)."""
import copy, sys, torch
from selfspec.bench.prompts import builtin_suite
from selfspec.models.loading import load_model
from selfspec.engine.lowbit import quantize_int4, dequantize_int4, quantize_int8
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
print("generated", len(seqs))
def q4(w, g):
    return dequantize_int4(*quantize_int4(w, g))
def q8(w):
    q, s = quantize_int8(w); return q.float() * s[:, None]
def sym4(w, g):
    o, i = w.shape; x = w.float().reshape(o, i // g, g)
    s = x.abs().amax(-1, keepdim=True).clamp(min=1e-8) / 7
    return (torch.round(x / s).clamp(-8, 7) * s).reshape(o, i)
f32 = copy.deepcopy(model).float()
head_w = f32.lm_head.weight.detach().clone()
def variant(layer_q, head_q):
    m = copy.deepcopy(f32)
    m.lm_head.weight = torch.nn.Parameter(head_q(head_w)) if head_q else torch.nn.Parameter(head_w.clone())
    with torch.no_grad():
        for name, mod in m.model.layers.named_modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(layer_q(mod.weight))
    return m
def agreement(m, rescore=None):
    hit = tot = 0
    with torch.inference_mode():
        for n, out in seqs:
            h = m.model(out).last_hidden_state[0, n - 1:-1]
            logits = m.lm_head(h)
            if rescore is not None:
                k, exact = rescore
                top = logits.topk(k, -1).indices
                ex = (h[:, None, :] * exact[top]).sum(-1)
                pred = top.gather(1, ex.argmax(-1, keepdim=True))[:, 0]
            else:
                pred = logits.argmax(-1)
            ref = out[0, n:]
            hit += (pred == ref).sum().item(); tot += ref.numel()
    return hit / tot
head8 = q8(head_w)
V = {
 "g32 + head int8 (now)": (lambda w: q4(w, 32), q8),
 "g64 + head int8": (lambda w: q4(w, 64), q8),
 "sym g32 + head int8": (lambda w: sym4(w, 32), q8),
 "g32 + head g32": (lambda w: q4(w, 32), lambda w: q4(w, 32)),
}
for name, (lq, hq) in V.items():
    print(f"{name}: {agreement(variant(lq, hq)):.4f}", flush=True)
m = variant(lambda w: q4(w, 32), lambda w: q4(w, 32))
for k in (4, 16, 64):
    print(f"g32 + head g32 screen, int8 rescoring top-{k}: {agreement(m, (k, head8)):.4f}", flush=True)
m = variant(lambda w: q4(w, 64), lambda w: q4(w, 64))
for k in (16,):
    print(f"g64 + head g64 screen, int8 rescoring top-{k}: {agreement(m, (k, head8)):.4f}", flush=True)
