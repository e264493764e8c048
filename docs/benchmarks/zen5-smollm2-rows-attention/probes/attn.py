"""rows attention per layer (9 heads, 3 groups, 64 wide, bf16) at 120 and 300 positions, 1-17 rows. Usage: PYTHONPATH=$PWD python attn.py THREADS (from the repository root, PYTHONPATH=$PWD)."""
import time, statistics, torch, sys
from selfspec.engine.native_build import native_extension
ext = native_extension()
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
heads, kv, d = 9, 3, 64
for ctx in (120, 300):
    keys = torch.randn(1, kv, 600, d).to(torch.bfloat16); values = torch.randn(1, kv, 600, d).to(torch.bfloat16)
    line = f"ctx {ctx}:"
    for rows in (1, 2, 5, 9, 17):
        q = torch.randn(1, heads, rows, d).to(torch.bfloat16)
        for _ in range(50): ext.attend_cached_rows(q, keys, values, ctx, 0.125)
        ts = []
        for _ in range(15):
            t = time.perf_counter()
            for _ in range(100): ext.attend_cached_rows(q, keys, values, ctx, 0.125)
            ts.append((time.perf_counter() - t) / 100)
        line += f" r{rows} {statistics.median(ts)*1e6:.1f}us"
    print(line)
