"""oneDNN's per-call cost on tiny packed weights, interleaved or grouped. Usage: python ovh.py THREADS (from the repository root, PYTHONPATH=$PWD)."""
import time, statistics, torch
import sys; torch.set_num_threads(int(sys.argv[1]))
P = torch.ops.mkldnn._reorder_linear_weight
L = torch.ops.mkldnn._linear_pointwise
shapes = [(96, 64), (64, 64), (192, 64), (64, 160), (256, 64)]
ws = [P(torch.randn(*s).to(torch.bfloat16), 9) for s in shapes]
for order in ("interleaved", "grouped"):
    for r in (1, 2, 5, 9):
        xs = {s[1]: torch.randn(r, s[1]).to(torch.bfloat16) for s in shapes}
        seq = ws * 30 if order == "interleaved" else [w for w in ws for _ in range(30)]
        ts = []
        for rep in range(20):
            t = time.perf_counter()
            for w in seq: L(xs[w.shape[1]], w, None, "none", [], "")
            ts.append((time.perf_counter() - t) / len(seq))
        print(order, f"r{r}: {statistics.median(ts)*1e6:.1f} us/call")
