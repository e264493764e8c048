"""all low-bit products of a draft token back to back, and a one-tensor sum's bandwidth. Usage: python dprod.py DTYPE (from the repository root, PYTHONPATH=$PWD)."""
import sys, time, statistics, torch
from selfspec.models.loading import load_model
from selfspec.profiles.draft_weights import build_draft
from selfspec.profiles.schema import SkipProfile
from selfspec.engine.architectures import num_layers
from selfspec.engine.lowbit import LowBitLinear
from selfspec.engine.native_build import native_extension
torch.set_num_threads(2)
ext = native_extension()
lm = load_model(None, dtype=sys.argv[1])
draft, _ = build_draft(lm.model, SkipProfile.none(num_layers(lm.model), model=lm.name), "int4", max_draft=8)
mods = [m for m in draft.walk.decoder.modules() if isinstance(m, LowBitLinear)] if hasattr(draft.walk, "decoder") else []
if not mods:
    mods = [m for m in draft.lowbit.__dict__.values() if isinstance(m, LowBitLinear)]
print(len(mods), "low-bit products")
heads = [m for m in draft.walk.__dict__.values() if isinstance(m, LowBitLinear)]
natives = [m.native_product for m in mods if m.native_product is not None]
head = getattr(draft.head, "native", None)
print("natives", len(natives), {n[0] for n in natives})
nbytes = sum(n[1].numel() * n[1].element_size() + n[2].numel() * n[2].element_size() for n in natives)
x = {n[1].size(1) * 32: torch.randn(1, n[1].size(1) * 32).to(torch.bfloat16) for n in natives}
def run():
    for kind, packed, scales, group in natives:
        ext.int8_dot_mm(kind, x[packed.size(1) * 32], packed, scales)
ts = []
for _ in range(30):
    t = time.perf_counter(); run(); ts.append(time.perf_counter() - t)
t = statistics.median(ts)
print(f"all products of a draft token: {t*1e3:.2f} ms for {nbytes/1e6:.1f} MB -> {nbytes/t/1e9:.1f} GB/s")
big = torch.randn(50_000_000)
ts = []
for _ in range(7):
    t0 = time.perf_counter(); big.sum(); ts.append(time.perf_counter() - t0)
print(f"stream: {200/statistics.median(ts)/1e3:.1f} GB/s")
