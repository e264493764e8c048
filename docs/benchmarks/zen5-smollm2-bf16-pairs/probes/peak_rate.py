"""The pair dot products' rate over weights held in L2, one thread, 1-12 rows (from the repository root, PYTHONPATH=$PWD)."""
import time, torch
from selfspec.engine.native_build import native_extension
ext = native_extension()
torch.set_num_threads(1)
def pack(w):
    out, inp = w.shape
    return w.view(out // 16, 16, inp // 2, 2).permute(0, 2, 1, 3).contiguous().view(out // 16, inp // 2, 32)
for out, inp in ((3200, 256), (1024, 256)):
  p = pack(torch.randn(out, inp).to(torch.bfloat16))
  for r in (1, 2, 4, 6, 12):
    x = torch.randn(r, inp).to(torch.bfloat16)
    for _ in range(50): ext.bf16_pairs_mm(x, p, None)
    n = 2000; t = time.perf_counter()
    for _ in range(n): ext.bf16_pairs_mm(x, p, None)
    dt = (time.perf_counter() - t) / n
    instr = r * out * inp / 32
    print(out, inp, r, f"{dt*1e6:.1f}us {instr/dt/1e9:.2f} G dpbf16/s")
