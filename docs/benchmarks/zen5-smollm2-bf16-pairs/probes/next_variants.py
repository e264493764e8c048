"""Next-tile prefetch variants of csrc/bf16_pair_products.cpp (NEXTxNEAR, 0/1 each; next_template.cpp.txt), as stream_variants.py (from the repository root)."""
import sys, time, statistics, torch
from torch.utils import cpp_extension
src = open("docs/benchmarks/zen5-smollm2-bf16-pairs/probes/next_template.cpp.txt").read()
torch.set_num_threads(2)
def pack(w):
    out, inp = w.shape
    return w.view(out // 16, 16, inp // 2, 2).permute(0, 2, 1, 3).contiguous().view(out // 16, inp // 2, 32)
shapes = [(960, 576), (576, 576), (3072, 576), (576, 1536)] * 30 + [(49152, 576)]
ps = [pack(torch.randn(o, i).to(torch.bfloat16)) for o, i in shapes]
xs = {i: torch.randn(17, i).to(torch.bfloat16) for i in (576, 1536)}
exts = {}
for v in sys.argv[1].split(","):
    nxt, near = v.split("x")
    name = f"n_{nxt}_{near}"
    path = f"/tmp/{name}.cpp"
    open(path, "w").write(src.replace("NEXT", nxt).replace("NEAR", near))
    exts[v] = cpp_extension.load(name, [path], extra_cflags=["-O2", "-fopenmp"], build_directory="/tmp", verbose=False)
res = {}
for rep in range(int(sys.argv[2]) if len(sys.argv) > 2 else 9):
    for v, ext in exts.items():
        for r in (1, 5, 9):
            t = time.perf_counter()
            for p in ps: ext.mm(xs[p.shape[1] * 2][:r], p, None)
            res.setdefault((v, r), []).append(time.perf_counter() - t)
for v in exts:
    print(v, " ".join(f"r{r} {statistics.median(res[(v, r)])*1e3:.2f}" for r in (1, 5, 9)), flush=True)
