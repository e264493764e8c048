"""bf16 pair products over one forward's worth of SmolLM2 weights, rows 1..10, per tile shape (probe): variants of
csrc/bf16_pair_products.cpp with kTileRows/kTileBlocks changed, built as modules of their own (/tmp/tiles/vRxB/)."""
import statistics, time, torch, sys
from torch.utils import cpp_extension
sys.path.insert(0, "/work/main")
from selfspec.engine.narrow_linear import bf16_pairs_packed
torch.set_num_threads(2)
variants = sys.argv[1:]
mods = {v: cpp_extension.load(f"tiles_{v}", [f"/tmp/tiles/{v}/pairs.cpp", f"/tmp/tiles/{v}/bind.cpp"],
                              extra_cflags=["-O2", "-fopenmp"], build_directory=f"/tmp/tiles/{v}") for v in variants}
torch.manual_seed(0)
shapes = [(960, 576), (576, 576), (3072, 576), (576, 1536)] * 30 + [(49152, 576)]
weights = [bf16_pairs_packed(torch.randn(s).bfloat16() * 0.02) for s in shapes]
def forward(mm, rows):
    xs = {576: torch.randn(rows, 576).bfloat16(), 1536: torch.randn(rows, 1536).bfloat16()}
    def run():
        for w in weights:
            mm(xs[w.shape[1] * 2], w, None)
    return run
res = {v: {r: [] for r in range(1, 11)} for v in variants}
for rep in range(5):
    for r in range(1, 11):
        for v in variants:
            f = forward(mods[v].mm, r)
            f()
            t = []
            for _ in range(5):
                a = time.perf_counter(); f(); t.append(time.perf_counter() - a)
            res[v][r].append(statistics.median(t) * 1e3)
for v in variants:
    base = statistics.median(res[v][1])
    print(v, " ".join(f"{r}:{statistics.median(res[v][r]):.2f}ms({statistics.median(res[v][r])/base:.2f})" for r in range(1, 11)))
