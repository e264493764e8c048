"""one int4 product's time hot in cache, 1 and 2 threads (from the repository root, PYTHONPATH=$PWD)."""
import time, statistics, torch
from selfspec.engine.native_build import native_extension
from selfspec.engine.lowbit import pack_int4_for_int8_dot, quantize_int4
ext = native_extension()
for threads in (1, 2):
    torch.set_num_threads(threads)
    for out, inp in ((16, 32), (960, 576), (576, 1536), (3072, 576)):
        p, s = pack_int4_for_int8_dot(*quantize_int4(torch.randn(out, inp), 32))
        x = torch.randn(1, inp).to(torch.bfloat16)
        for _ in range(100): ext.int8_dot_mm(2, x, p, s)
        ts = []
        for _ in range(20):
            t = time.perf_counter()
            for _ in range(200): ext.int8_dot_mm(2, x, p, s)
            ts.append((time.perf_counter() - t) / 200)
        print(f"threads {threads} {out}x{inp}: {statistics.median(ts)*1e6:.1f} us (hot in cache)")
