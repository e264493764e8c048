"""bf16_pairs_mm against oneDNN's packed product over SmolLM2-shaped weights in a forward's order, 1-17 rows; and each row alike alone and among others (from the repository root, PYTHONPATH=$PWD)."""
import time, statistics, sys, torch
from selfspec.engine.native_build import native_extension
torch.set_num_threads(2)
ext = native_extension()
print("available", ext.bf16_pairs_available())
def pack(w):
    out, inp = w.shape
    return w.view(out // 16, 16, inp // 2, 2).permute(0, 2, 1, 3).contiguous().view(out // 16, inp // 2, 32)
g = torch.Generator().manual_seed(0)
# exactness and accuracy
for out, inp in ((960, 576), (576, 1536), (208, 64)):
    w = torch.randn(out, inp, generator=g).to(torch.bfloat16); b = torch.randn(out, generator=g).to(torch.bfloat16)
    x = torch.randn(40, inp, generator=g).to(torch.bfloat16)
    ref = x.double() @ w.double().T + b.double()
    got = ext.bf16_pairs_mm(x, pack(w), b)
    err = ((got.double() - ref).abs().max() / ref.abs().max()).item()
    alone = torch.cat([ext.bf16_pairs_mm(x[j:j+1], pack(w), b) for j in range(40)])
    exact = all(torch.equal(ext.bf16_pairs_mm(x[s:s+r], pack(w), b), alone[s:s+r]) for r in range(1, 18) for s in range(0, 40 - r, r))
    print(out, inp, "err", f"{err:.1e}", "exact", exact)
# forward-order stream: SmolLM2 shapes
layers = 30
shapes = [(960, 576), (576, 576), (3072, 576), (576, 1536)] * layers + [(49152, 576)]
ws = [torch.randn(o, i).to(torch.bfloat16) for o, i in shapes]
ps = [pack(w) for w in ws]
dn = [torch.ops.mkldnn._reorder_linear_weight(w, 9) for w in ws]
xs = {i: torch.randn(17, i).to(torch.bfloat16) for i in (576, 1536)}
def ours(r): return lambda: [ext.bf16_pairs_mm(xs[p.shape[1] * 2][:r], p, None) for p in ps]
def onednn(r): return lambda: [torch.ops.mkldnn._linear_pointwise(xs[w.shape[1]][:r], d, None, "none", [], "") for d, w in zip(dn, ws)]
res = {}
for rep in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
    for r in (1, 2, 5, 9, 17):
        for name, f in (("ours", ours(r)), ("onednn", onednn(r))):
            t = time.perf_counter(); f(); res.setdefault((name, r), []).append(time.perf_counter() - t)
for name in ("ours", "onednn"):
    base = statistics.median(res[(name, 1)])
    print(name, " ".join(f"r{r} {statistics.median(res[(name, r)])*1e3:.2f}ms ({statistics.median(res[(name, r)])/base:.2f})" for r in (1, 2, 5, 9, 17)))
