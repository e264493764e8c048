"""The int4 draft's products alone, in a token's order, vs the layers call (probe)."""
import statistics, time, torch
from selfspec import DraftModel, SkipProfile
from selfspec.engine.native_build import native_extension
from selfspec.models.loading import load_model
torch.set_num_threads(2)
model = load_model(None, dtype="bfloat16").model
draft = DraftModel(model, SkipProfile(model.config.num_hidden_layers), weights="int4")
ext = native_extension()
nat = draft.walk._native
prods = list(zip(nat._kinds, nat._weights, nat._scales))
head = draft.head.lm_head
print(head.native_product[0], head.native_product[1].shape)
xs = {}
def run(rows):
    for kind, w, s in prods:
        x = xs.setdefault((rows, w.shape[1]), torch.randn(rows, w.shape[1] * 32))
        ext.int8_dot_mm(kind, x, w, s)
def run_head(rows):
    kind, w, s = head.native_product[:3]
    x = xs.setdefault(("h", rows), torch.randn(rows, w.shape[1] * 32))
    ext.int8_dot_mm(kind, x, w, s)
nbytes = sum(w.numel() * w.element_size() + s.numel() * s.element_size() for _, w, s in prods)
hb = sum(t.numel() * t.element_size() for t in head.native_product[1:3])
with torch.inference_mode():
    for f, name, b in ((run, "layers' products", nbytes), (run_head, "head", hb)):
        for rows in (1, 4):
            t = []
            for _ in range(40):
                a = time.perf_counter(); f(rows); t.append(time.perf_counter() - a)
            m = statistics.median(t)
            print(f"{name} rows {rows}: {m*1e3:.3f} ms, {b/1e6:.1f} MB, {b/m/1e9:.1f} GB/s")
