"""The rows attention, old against new, in alternating processes: `attn_ab.py old|new bfloat16` (probe).

"old" builds csrc/ as of b63fa37, copied to /tmp/old_csrc, as a module of its own; "new" is the working tree's.
Median of 300 calls through attend_cached_rows (Python call included), 9 heads in 3 groups of 64.
"""
import statistics, time, torch, sys, glob
which = sys.argv[1]
if which == "old":
    from torch.utils import cpp_extension
    ext = cpp_extension.load('old_native', sorted(glob.glob('/tmp/old_csrc/*.cpp')), extra_cflags=['-O2','-fopenmp'], build_directory='/tmp/oldbuild')
else:
    from selfspec.engine.native_build import native_extension
    ext = native_extension()
heads, kv, d = 9, 3, 64
cap = 1024
dtype = getattr(torch, sys.argv[2])
torch.manual_seed(0)
keys = torch.randn(1, kv, cap, d).to(dtype); values = torch.randn(1, kv, cap, d).to(dtype)
def med(f, reps=300):
    t = []
    for _ in range(reps):
        a = time.perf_counter(); f(); t.append(time.perf_counter() - a)
    return statistics.median(t) * 1e6
for th in (1, 2):
    torch.set_num_threads(th)
    for n in (40, 300, 700):
        out = []
        for rows in (1, 2, 5, 9):
            q = torch.randn(1, heads, rows, d).to(dtype)
            out.append(f"{rows}:{med(lambda: ext.attend_cached_rows(q, keys, values, n, 0.125)):6.1f}")
        print(f"{which} {sys.argv[2]} th {th} n {n:3d}: " + "  ".join(out), flush=True)
