"""The int4 products in a token's order (streamed), and each shape alone (cached), 1 and 2 threads (probe)."""
import statistics, time, torch, sys
sys.path.insert(0, "/work/main")
from selfspec.engine.lowbit import pack_int4_for_int8_dot, quantize_int4, INT8_DOT_KINDS
from selfspec.engine.native_build import native_extension
ext = native_extension()
kind = INT8_DOT_KINDS[4, "vnni"]
torch.manual_seed(0)
shapes = [(960, 576), (576, 576), (3072, 576), (576, 1536)] * 30
packs = [pack_int4_for_int8_dot(*quantize_int4(torch.randn(s) * 0.02, 32)) for s in shapes]
nbytes = sum(p.numel() + 2 * s.numel() for p, s in packs)
xs = {576: torch.randn(1, 576), 1536: torch.randn(1, 1536)}
def med(f, reps=15):
    f(); t = []
    for _ in range(reps):
        a = time.perf_counter(); f(); t.append(time.perf_counter() - a)
    return statistics.median(t) * 1e3
for th in (2, 1):
    torch.set_num_threads(th)
    ms = med(lambda: [ext.int8_dot_mm(kind, xs[p.shape[1] * 32], p, s) for p, s in packs])
    print(f"threads {th}: all layers {nbytes/1e6:.1f} MB in {ms:.3f} ms = {nbytes/ms/1e6:.1f} GB/s")
    for i in range(4):
        p, s = packs[i]
        us = med(lambda: ext.int8_dot_mm(kind, xs[p.shape[1] * 32], p, s), reps=500) * 1e3
        b = p.numel() + 2 * s.numel()
        print(f"   {shapes[i]} alone (cached): {us:.1f} us, {b/1e3:.0f} KB, {b/us/1e3:.1f} GB/s")
    print("   empty-ish call overhead:", round(med(lambda: ext.int8_dot_mm(kind, xs[576], packs[1][0][:1], packs[1][1][:1]), reps=2000) * 1e3, 1), "us")
