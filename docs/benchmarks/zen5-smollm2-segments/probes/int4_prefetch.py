"""The int4 8-bit dot products over a token's layers, variants of csrc/int8_dot_products.cpp built as modules of
their own (/tmp/i4/<variant>/i4.cpp: prefetch distance 2-16 KB, into L1 or L2; x2: two blocks at once) (probe)."""
import statistics, time, torch, sys
sys.path.insert(0, "/work/main")
from torch.utils import cpp_extension
from selfspec.engine.lowbit import pack_int4_for_int8_dot, quantize_int4, INT8_DOT_KINDS
kind = INT8_DOT_KINDS[4, "vnni"]
variants = sys.argv[1:]
mods = {v: cpp_extension.load(f"i4_{v}", [f"/tmp/i4/{v}/i4.cpp", f"/tmp/i4/{v}/bind.cpp"], extra_cflags=["-O2", "-fopenmp"], build_directory=f"/tmp/i4/{v}") for v in variants}
torch.manual_seed(0)
shapes = [(960, 576), (576, 576), (3072, 576), (576, 1536)] * 30
packs = [pack_int4_for_int8_dot(*quantize_int4(torch.randn(s) * 0.02, 32)) for s in shapes]
nbytes = sum(p.numel() + 2 * s.numel() for p, s in packs)
xs = {576: torch.randn(1, 576), 1536: torch.randn(1, 1536)}
torch.set_num_threads(2)
res = {v: [] for v in variants}
for rep in range(7):
    for v in variants:
        mm = mods[v].mm
        f = lambda: [mm(kind, xs[p.shape[1] * 32], p, s) for p, s in packs]
        f(); t = []
        for _ in range(7):
            a = time.perf_counter(); f(); t.append(time.perf_counter() - a)
        res[v].append(statistics.median(t) * 1e3)
for v in variants:
    ms = statistics.median(res[v])
    print(f"{v}: {ms:.3f} ms, {nbytes/ms/1e6:.1f} GB/s  (runs {' '.join(f'{x:.2f}' for x in res[v])})")
