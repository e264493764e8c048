"""Prefetch variants of csrc/bf16_pair_products.cpp (TRxTBxPREFETCH_VALUESxHINT, e.g. 6x4x1024xT1) over SmolLM2-shaped bf16 weights in a forward's order, 1/5/9 rows (from the repository root)."""
import sys, time, statistics, torch
from torch.utils import cpp_extension
src = open("selfspec/engine/csrc/bf16_pair_products.cpp").read()
src = src.replace('#include "products.h"', '#include <torch/extension.h>')
src = src.replace("constexpr int kTileRows = 6, kTileBlocks = 4;", "constexpr int kTileRows = TR, kTileBlocks = TB;")
src = src.replace("constexpr int64_t kPrefetchValues = 1024;", "constexpr int64_t kPrefetchValues = PF;")
src = src.replace("_MM_HINT_T0", "HINT")
src += '\nPYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("mm", &bf16_pairs_mm); }\n'
torch.set_num_threads(2)
def pack(w):
    out, inp = w.shape
    return w.view(out // 16, 16, inp // 2, 2).permute(0, 2, 1, 3).contiguous().view(out // 16, inp // 2, 32)
shapes = [(960, 576), (576, 576), (3072, 576), (576, 1536)] * 30 + [(49152, 576)]
ps = [pack(torch.randn(o, i).to(torch.bfloat16)) for o, i in shapes]
xs = {i: torch.randn(17, i).to(torch.bfloat16) for i in (576, 1536)}
exts = {}
for v in sys.argv[1].split(","):
    tr, tb, pf, hint = v.split("x")
    name = f"s_{tr}_{tb}_{pf}_{hint}"
    path = f"/tmp/{name}.cpp"
    open(path, "w").write(src.replace("TR", tr).replace("TB", tb).replace("PF", pf).replace("HINT", "_MM_HINT_" + hint))
    exts[v] = cpp_extension.load(name, [path], extra_cflags=["-O2", "-fopenmp"], build_directory="/tmp", verbose=False)
res = {}
for rep in range(7):
    for v, ext in exts.items():
        for r in (1, 5, 9):
            t = time.perf_counter()
            for p in ps: ext.mm(xs[p.shape[1] * 2][:r], p, None)
            res.setdefault((v, r), []).append(time.perf_counter() - t)
for v in exts:
    print(v, " ".join(f"r{r} {statistics.median(res[(v, r)])*1e3:.2f}" for r in (1, 5, 9)), flush=True)
