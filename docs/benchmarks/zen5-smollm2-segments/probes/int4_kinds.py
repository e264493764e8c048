"""The int4 products in a token's order with the VNNI or the AVX2 kernel (and cached, per shape) (probe)."""
import statistics, time, torch, sys
sys.path.insert(0, "/work/main")
from selfspec.engine.lowbit import pack_int4_for_int8_dot, quantize_int4, INT8_DOT_KINDS
from selfspec.engine.native_build import native_extension
ext = native_extension()
vnni, avx2 = INT8_DOT_KINDS[4, "vnni"], INT8_DOT_KINDS[4, "avx2"]
torch.manual_seed(0)
shapes = [(960, 576), (576, 576), (3072, 576), (576, 1536)] * 30
packs = [pack_int4_for_int8_dot(*quantize_int4(torch.randn(s) * 0.02, 32)) for s in shapes]
xs = {576: torch.randn(1, 576), 1536: torch.randn(1, 1536)}
torch.set_num_threads(2)
plans = {"all vnni": [vnni] * 120, "all avx2": [avx2] * 120, "gate_up avx2": [avx2 if s == (3072, 576) else vnni for s in shapes]}
res = {k: [] for k in plans}
for rep in range(7):
    for name, kinds in plans.items():
        f = lambda: [ext.int8_dot_mm(k, xs[p.shape[1] * 32], p, s) for k, (p, s) in zip(kinds, packs)]
        f(); t = []
        for _ in range(7):
            a = time.perf_counter(); f(); t.append(time.perf_counter() - a)
        res[name].append(statistics.median(t) * 1e3)
for name in plans:
    print(f"{name}: {statistics.median(res[name]):.3f} ms  ({' '.join(f'{x:.2f}' for x in res[name])})")
print("cached per shape:")
for s, (p, sc) in zip(shapes[:4], packs[:4]):
    x = xs[p.shape[1] * 32]
    for k in (vnni, avx2):
        t = []
        for _ in range(300):
            a = time.perf_counter(); ext.int8_dot_mm(k, x, p, sc); t.append(time.perf_counter() - a)
        print(s, k, f"{statistics.median(t)*1e6:.1f} us")
