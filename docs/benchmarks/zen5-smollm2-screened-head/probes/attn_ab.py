"""attention of rows from a given extension build (alternate processes): python attn_ab.py SO_PATH"""
import importlib.util, statistics, sys, time, torch
torch.set_num_threads(2)
spec = importlib.util.spec_from_file_location("selfspec_native", sys.argv[1])
ext = importlib.util.module_from_spec(spec); spec.loader.exec_module(ext)
keys = torch.randn(1, 3, 512, 64).bfloat16(); values = torch.randn(1, 3, 512, 64).bfloat16()
out = []
for rows in (1, 5, 9):
    q = torch.randn(1, 9, rows, 64).bfloat16()
    t = []
    for _ in range(600):
        a = time.perf_counter(); ext.attend_cached_rows(q, keys, values, 300, 0.125); t.append(time.perf_counter() - a)
    out.append(min(t) * 1e6)
print(" ".join(f"{x:.1f}" for x in out))
