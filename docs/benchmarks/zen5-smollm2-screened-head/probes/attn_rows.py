"""The rows attention alone: one layer's call at 300 positions, bf16, 1/5/9 rows (probe)."""
import statistics, time, torch
from selfspec.engine.native_build import native_extension
torch.set_num_threads(2)
ext = native_extension()
heads, kv, d, n = 9, 3, 64, 300
cap = 512
keys = torch.randn(1, kv, cap, d).bfloat16(); values = torch.randn(1, kv, cap, d).bfloat16()
def med(f, reps=400):
    t = []
    for _ in range(reps):
        a = time.perf_counter(); f(); t.append(time.perf_counter() - a)
    return statistics.median(t) * 1e6
for rows in (1, 2, 5, 9, 17):
    q = torch.randn(1, heads, rows, d).bfloat16()
    us = med(lambda: ext.attend_cached_rows(q, keys, values, n, 0.125))
    print(f"rows {rows}: {us:.1f} us a layer call, x30 = {us*30/1e3:.2f} ms")
