"""SmolLM2 bf16's packed oneDNN products in a forward's order against grouped by shape, 1-9 rows (from the repository root, PYTHONPATH=$PWD)."""
import time, statistics, torch, sys
from selfspec.models.loading import load_model
torch.set_num_threads(2)
lm = load_model(None, dtype="bfloat16")
m = lm.model
P = torch.ops.mkldnn._reorder_linear_weight
layers = m.model.layers
def stack(*ws): return torch.cat([w.weight.detach() for w in ws])
seq = []
for L in layers:
    a, mlp = L.self_attn, L.mlp
    seq += [P(stack(a.q_proj, a.k_proj, a.v_proj), 9), P(a.o_proj.weight.detach(), 9), P(stack(mlp.gate_proj, mlp.up_proj), 9), P(mlp.down_proj.weight.detach(), 9)]
seq.append(P(m.lm_head.weight.detach(), 9))
shapes = [(w.shape[1]) for w in seq]
def run(rows):
    xs = {}
    for w in seq:
        inp = w.shape[1]
        x = xs.setdefault(inp, torch.randn(rows, inp).to(torch.bfloat16))
        torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
def run_pairs(rows):  # one row as two for down
    pass
res = {1: [], 2: [], 5: [], 9: []}
for rep in range(15):
    for r in res:
        t = time.perf_counter(); run(r); res[r].append(time.perf_counter() - t)
base = statistics.median(res[1])
print("in forward order:", " ".join(f"r{r} {statistics.median(t)*1e3:.2f} ms ({statistics.median(t)/base:.2f})" for r, t in res.items()))
# grouped by shape
by = {}
for w in seq: by.setdefault(tuple(w.shape), []).append(w)
res = {1: [], 5: []}
for rep in range(15):
    for r in res:
        t = time.perf_counter()
        for shape, ws in by.items():
            x = torch.randn(r, shape[1]).to(torch.bfloat16)
            for w in ws: torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
        res[r].append(time.perf_counter() - t)
base = statistics.median(res[1])
print("grouped by shape:", " ".join(f"r{r} {statistics.median(t)*1e3:.2f} ms ({statistics.median(t)/base:.2f})" for r, t in res.items()))
