"""the int4 8-bit dot products' bandwidth over 30 layers' weights of a shape (from the repository root, PYTHONPATH=$PWD)."""
import time, statistics, torch
from selfspec.engine.native_build import native_extension
from selfspec.engine.lowbit import pack_int4_for_int8_dot, quantize_int4, pack_int8_for_int8_dot, quantize_int8, INT8_DOT_GROUP
torch.set_num_threads(2)
ext = native_extension()
def med(f, n=15):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)
big = torch.randn(50_000_000)  # 200 MB
t = med(lambda: big.sum(), 7); print(f"stream sum fp32: {200/ t / 1e3:.1f} GB/s")
for out, inp, n in ((3072, 576, 30), (576, 1536, 30), (960, 576, 30)):
    ws = [torch.randn(out, inp) * 0.02 for _ in range(n)]
    packs = [pack_int4_for_int8_dot(*quantize_int4(w, INT8_DOT_GROUP)) for w in ws]
    x = torch.randn(1, inp)
    nbytes = sum(p.numel() + s.numel() * 4 for p, s in packs)
    wbytes = sum(p.numel() for p, s in packs)
    t = med(lambda: [ext.int8_dot_mm(2, x, p, s) for p, s in packs])
    print(f"int4 {out}x{inp}x{n}: {t*1e3:.2f} ms, {nbytes/1e6:.1f} MB ({wbytes/1e6:.1f} MB weights) -> {nbytes/t/1e9:.1f} GB/s")
