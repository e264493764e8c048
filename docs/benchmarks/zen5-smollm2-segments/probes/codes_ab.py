"""The int4 products over a token's layers (SmolLM2's shapes, streamed), float16 scale-zero pairs a group (3664a9f)
against byte codes (now), each built as a module of its own, interleaved in one process (probe)."""
import importlib.util, statistics, time, torch, sys
from torch.utils import cpp_extension
sys.path.insert(0, "/work/main")
from selfspec.engine import lowbit
spec = importlib.util.spec_from_file_location("old_lowbit", "/tmp/codes_ab/old_lowbit.py")
old_lowbit = importlib.util.module_from_spec(spec); sys.modules["old_lowbit"] = old_lowbit; spec.loader.exec_module(old_lowbit)
mods = {v: cpp_extension.load(f"codes_{v}", [f"/tmp/codes_ab/{v}/i4.cpp", f"/tmp/codes_ab/{v}/bind.cpp"],
                              extra_cflags=["-O2", "-fopenmp"], build_directory=f"/tmp/codes_ab/{v}") for v in ("old", "new")}
torch.manual_seed(0)
torch.set_num_threads(2)
shapes = [(960, 576), (576, 576), (3072, 576), (576, 1536)] * 30
ws = [torch.randn(s) * 0.02 for s in shapes]
packs = {"old": [old_lowbit.pack_int4_for_int8_dot(*old_lowbit.quantize_int4(w, 32)) for w in ws],
         "new": [lowbit.pack_int4_for_int8_dot(*lowbit.quantize_int4_coded(w, 32)) for w in ws]}
kind = lowbit.INT8_DOT_KINDS[4, sys.argv[1] if len(sys.argv) > 1 else "vnni"]
xs = {576: torch.randn(1, 576), 1536: torch.randn(1, 1536)}
res = {v: [] for v in packs}
for rep in range(15):
    for v in packs:
        mm = mods[v].mm
        f = lambda: [mm(kind, xs[p.shape[1] * 32], p, s) for p, s in packs[v]]
        f(); t = []
        for _ in range(5):
            a = time.perf_counter(); f(); t.append(time.perf_counter() - a)
        res[v].append(statistics.median(t) * 1e3)
for v in packs:
    b = sum(p.numel() + s.numel() * s.element_size() for p, s in packs[v])
    ms = statistics.median(res[v])
    print(f"{v}: {b/1e6:.1f} MB, {ms:.3f} ms ({b/ms/1e6:.1f} GB/s); runs {' '.join(f'{x:.2f}' for x in res[v])}")
