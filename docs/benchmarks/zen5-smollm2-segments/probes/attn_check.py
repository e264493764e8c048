"""The new rows attention against float64 attention, each row alone against the rows together, any threads (probe)."""
import torch, math
from selfspec.engine.native_build import native_extension
ext = native_extension()
torch.manual_seed(0)
def reference(q, k, v, position, scale):
    # q (1,H,R,d) ; k,v (1,G,cap,d)
    H, R, d = q.shape[1], q.shape[2], q.shape[3]; G = k.shape[1]
    out = torch.empty(1, H, R, d, dtype=torch.float64)
    for r in range(R):
        n = position + r + 1
        for h in range(H):
            g = h // (H // G)
            s = (q[0, h, r].double() @ k[0, g, :n].double().T) * scale
            out[0, h, r] = torch.softmax(s, -1) @ v[0, g, :n].double()
    return out
worst = 0
for dtype in (torch.bfloat16, torch.float32, torch.float16):
    for (H, G, d) in ((9, 3, 64), (4, 2, 128), (8, 8, 32), (6, 2, 48), (4, 1, 96)):
        for position in (0, 5, 63, 64, 130, 300):
            for R in (1, 2, 5, 9):
                k = torch.randn(1, G, 512, d).to(dtype); v = torch.randn(1, G, 512, d).to(dtype)
                q = torch.randn(1, H, R, d).to(dtype)
                out = ext.attend_cached_rows(q, k, v, position, 1 / math.sqrt(d))
                ref = reference(q, k, v, position, 1 / math.sqrt(d))
                err = (out.double() - ref).abs().max().item()
                worst = max(worst, err / (2 ** -7 if dtype == torch.bfloat16 else 2 ** -10 if dtype == torch.float16 else 1e-5))
                # rows alone equal rows together
                for r in range(R):
                    alone = ext.attend_cached_rows(q[:, :, r:r+1], k, v, position + r, 1 / math.sqrt(d))
                    assert torch.equal(alone[:, :, 0], out[:, :, r]), (dtype, H, G, d, position, R, r)
print("worst error in units of the dtype's epsilon:", worst)
k = torch.randn(1, 3, 512, 64).bfloat16(); v = torch.randn(1, 3, 512, 64).bfloat16(); q = torch.randn(1, 9, 5, 64).bfloat16()
for th in (1, 2, 3):
    torch.set_num_threads(th)
    a = ext.attend_cached_rows(q, k, v, 300, 0.125)
    if th == 1: base = a
    assert torch.equal(a, base)
print("threads agree")
