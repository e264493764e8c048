"""timing of the bf16 pair-dot product tried and not kept (bf16_rows.cpp.txt, added to csrc/ with its binding) against oneDNN (from the repository root, PYTHONPATH=$PWD)."""
import time, statistics, torch
from selfspec.engine.native_build import native_extension
torch.set_num_threads(2)
ext = native_extension()
print("available", ext.bf16_rows_available())
def pack(w):
    out, inp = w.shape
    return w.view(out // 16, 16, inp // 2, 2).permute(0, 2, 1, 3).contiguous().view(out // 16, inp // 2, 32)
for out, inp, n in ((960, 576, 30), (576, 576, 30), (3072, 576, 30), (576, 1536, 30), (49152, 576, 1)):
    ws = [torch.randn(out, inp).to(torch.bfloat16) for _ in range(n)]
    ps = [pack(w) for w in ws]
    b = torch.randn(out).to(torch.bfloat16)
    x = torch.randn(17, inp).to(torch.bfloat16)
    ref = (x.double() @ ws[0].double().T + b.double())
    got = ext.bf16_rows_mm(x, ps[0], b)
    err = (got.double() - ref).abs().max().item() / ref.abs().max().item()
    alone = torch.cat([ext.bf16_rows_mm(x[j:j+1], ps[0], b) for j in range(17)])
    exact = all(torch.equal(ext.bf16_rows_mm(x[:r], ps[0], b), alone[:r]) for r in range(1, 18))
    packed = [torch.ops.mkldnn._reorder_linear_weight(w, 9) for w in ws]
    line = f"{out}x{inp}x{n}: err {err:.1e} exact {exact}"
    for rows in (1, 5, 9, 17):
        xr = x[:rows]
        t_ours, t_dnn = [], []
        for rep in range(15):
            t = time.perf_counter(); [ext.bf16_rows_mm(xr, p, None) for p in ps]; t_ours.append(time.perf_counter() - t)
            t = time.perf_counter(); [torch.ops.mkldnn._linear_pointwise(xr, p, None, "none", [], "") for p in packed]; t_dnn.append(time.perf_counter() - t)
        line += f" | r{rows} ours {statistics.median(t_ours)*1e3:.2f} onednn {statistics.median(t_dnn)*1e3:.2f}"
    print(line, flush=True)
