"""The engine at real shapes on one GPU, in one command: how close each step gets to the hardware.

Random-initialised models with the shapes of Llama-2-7B, Llama-2-13B and Qwen2.5-7B (bf16, no
download: speed does not depend on the weights' values), each through selfspec's engine as the
decoders run it (static cache; compiled steps with CUDA graphs unless --no-compile):

- autoregressive ms/token against the bound of the weight bytes over the measured memory bandwidth;
- our autoregressive loop against transformers' generate(), default and static-cache-compiled;
- c for the paper's Llama-2-13B skip set (an even 45% spread for the other shapes), v for widths 2..9;
- c for low-bit draft weights (--draft-weights: int8, int4), alone and with the skip set, in the same
  interleaved rounds, each through the kernel this GPU measures fastest;
- SYNTHETIC: an end-to-end self-speculative run with planted redundancy — the output projections of
  the sublayers the profile skips are scaled down until the draft agrees with the full model at
  --planted-acceptance on random tokens — so that the loop's efficiency (measured speedup / the cost
  model's bound at the acceptance the run measured) is measured at real shapes, not projected.
  Its speedup says nothing about a trained model's; only the efficiency is meaningful.

    python scripts/gpu_bench.py --out gpu-bench          # one GPU, a few minutes per shape
    python scripts/gpu_bench.py --shape tiny             # the same code on tiny shapes, on CPU (CI)

Each part of a shape is saved as soon as it is measured, and a part that fails is recorded and the
next one runs: a lent GPU's minutes are few, and a timeout or one error must not lose the rest.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch

from gpu_projection import SHAPES, build_model, even_spread, make_skipped_sublayers_small, synthetic_prompt, tiny
from selfspec.bench.costmodel import bound_for_lengths, measure_draft_costs
from selfspec.bench.floor import measure_floor
from selfspec.bench.results import AR
from selfspec.bench.runner import (
    ours_autoregressive, ours_self_speculative, run_methods, transformers_generate,
    transformers_generate_static_compiled,
)
from selfspec.engine.metrics import acceptance_per_token, decode_metrics
from selfspec.engine.cache import new_cache
from selfspec.engine.decoding import DraftSettings
from selfspec.engine.devices import synchronize
from selfspec.engine.draft import DraftModel
from selfspec.engine.architectures import PROJECTION_GROUPS
from selfspec.engine.row_products import PREFILL_BUCKET, ROW_BUCKETS, RowProducts
from selfspec.engine.runtime import Engine, forward_full
from selfspec.engine.kernels import machine_fingerprint
from selfspec.models.loading import LanguageModel
from selfspec.profiles.schema import SkipProfile, read_profile

PROFILES = Path(__file__).resolve().parent.parent / "selfspec" / "profiles" / "bundled"
DEFAULT_MODELS = ("Llama-2-7B", "Llama-2-13B", "Qwen2.5-7B")
PAPER_13B = "meta-llama--Llama-2-13b-hf.json"
PARTS = ("floor", "methods", "profile", "unjoined", "costs", "planted", "synthetic_speculation")
JOIN_SETTINGS = ("measured", "every-row", "off")


def skip_profile(name: str, layers: int) -> tuple[str, SkipProfile]:
    """The paper's skip set where the shape has one (and its depth fits), else an even 45% spread."""
    if name == "Llama-2-13B":
        profile = read_profile(PROFILES / PAPER_13B)
        if profile.num_layers == layers:
            return "paper (Llama-2-13B)", profile
    return "even 45%", even_spread(layers, 0.45, name)


@torch.inference_mode()
def agreement(model, draft: DraftModel, prompts: list[list[int]]) -> float:
    """Share of positions where the draft's top-1 token equals the full model's (teacher-forced)."""
    same = total = 0
    for ids in prompts:
        tokens = torch.tensor([ids], device=model.device)
        positions = torch.arange(len(ids), device=model.device)[None]
        full = forward_full(model, tokens, 0, new_cache()).argmax(-1)
        drafted = draft(tokens, positions, new_cache())[0].argmax(-1)
        same += int((full == drafted).sum())
        total += len(ids)
    return same / total


def plant_redundancy(model, profile: SkipProfile, target: float, prompts: list[list[int]], steps: int = 10) -> dict:
    """Scale the skipped sublayers' output projections so the draft agrees with the full model at ~target.

    A scale of 0 makes skipping them exact (agreement 1); 1 leaves the random model as it is. Bisection
    on the scale, each try applied to the original weights (kept on the side).
    """
    layers = model.model.layers
    weights = [layers[i].self_attn.o_proj.weight for i in profile.attn] + [layers[i].mlp.down_proj.weight
                                                                           for i in profile.mlp]
    original = [w.detach().clone() for w in weights]
    draft = DraftModel(model, profile)

    def agreement_at(scale: float) -> float:
        with torch.no_grad():
            for w, o in zip(weights, original):
                w.copy_(o * scale)
        return agreement(model, draft, prompts)

    low, high = 0.0, 1.0  # agreement falls as the scale grows
    best = (0.0, agreement_at(0.0))
    for _ in range(steps):
        mid = (low + high) / 2
        got = agreement_at(mid)
        if abs(got - target) < abs(best[1] - target):
            best = (mid, got)
        low, high = (mid, high) if got >= target else (low, mid)
    agreement_at(best[0])
    return {"scale": best[0], "agreement": best[1], "target": target}


def timed_methods(lm: LanguageModel, args, prompts: list[list[int]]) -> dict:
    """Our AR loop against generate() default and static-compiled: ms/token, interleaved, same prompts."""
    methods = [ours_autoregressive(lm), transformers_generate(lm, "generate")]
    if lm.device.type == "cuda":  # the same loop reading each token before queuing the next step
        methods.append(ours_autoregressive(lm, "autoregressive, each token read at once", read_ahead=False))
    if args.generate_static:
        methods.append(transformers_generate_static_compiled(lm))
    runs = run_methods(methods, prompts, args.tokens, args.reps, lm.device, progress=False)
    out = {}
    for m in methods:
        seconds = sum(r.seconds for r in runs[m.name])
        tokens = sum(len(r.tokens) for r in runs[m.name])
        out[m.name] = {"ms_per_token": 1e3 * seconds / tokens,
                       "identical": all(r.tokens == a.tokens for r, a in zip(runs[m.name], runs[AR]))}
    ar_decode = decode_metrics(r.records for r in runs[AR]).seconds_per_token
    out[AR]["decode_ms_per_token"] = ar_decode * 1e3 if ar_decode else None
    for m in methods[1:]:
        out[m.name]["our_ar_speedup"] = out[m.name]["ms_per_token"] / out[AR]["ms_per_token"]
    return out


def speculative_run(lm: LanguageModel, draft: DraftModel, costs, args, prompts: list[list[int]]) -> dict:
    """SYNTHETIC (planted redundancy): our AR loop against self-speculation, fixed K and adaptive."""
    k = args.k
    methods = [ours_autoregressive(lm),
               # Context drafts off: this measures the engine with the layer-skip draft alone.
               ours_self_speculative(lm, f"self-spec K={k} fixed", draft,
                                     DraftSettings(max_draft=k, exit="off", controller=False, context_tokens=0)),
               ours_self_speculative(lm, f"self-spec K={k} adaptive", draft, DraftSettings(max_draft=k, context_tokens=0))]
    runs = run_methods(methods, prompts, args.tokens, args.reps, lm.device, progress=False)
    ar_seconds = sum(r.seconds for r in runs[AR])
    out = {}
    for m in methods[1:]:
        steps = [s for r in runs[m.name] for s in r.records if s.kind == "speculate"]
        a = acceptance_per_token(steps)
        speedup = ar_seconds / sum(r.seconds for r in runs[m.name])
        bound = bound_for_lengths(a, costs.c, costs.v, [s.drafted for s in steps]) if a is not None else None
        out[m.name] = {"speedup": speedup, "a": a, "bound": bound,
                       "efficiency": speedup / bound if bound else None,
                       "identical": all(r.tokens == b.tokens for r, b in zip(runs[m.name], runs[AR]))}
    return out


@torch.inference_mode()
def step_profile(lm: LanguageModel, prompt: list[int], steps: int = 20) -> dict:
    """Where one compiled one-token step's time goes: the step replayed back to back (no host sync) and
    synced every step as the loop does, and the device kernels of the synced step by name (profiler)."""
    engine, device = lm.engine, lm.device
    cache = engine.new_cache(len(prompt), 64)
    engine.full(torch.tensor([prompt], device=device), 0, cache)
    token, start = torch.zeros(1, 1, dtype=torch.long, device=device), len(prompt)

    def step(sync: bool):
        cache.rollback(start)  # the same position every time: the same work
        logits = engine.full(token, start, cache)
        if sync:
            int(logits[-1].argmax())  # the loop reads each token back before the next step

    def ms_per_step(sync: bool) -> float:
        for _ in range(3):
            step(sync)
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(sync)
        synchronize(device)
        return 1e3 * (time.perf_counter() - t0) / steps

    out = {"back_to_back_ms": ms_per_step(False), "synced_ms": ms_per_step(True)}
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"  # on the CPU (the rehearsal) the operators stand in for kernels
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(steps):
            step(True)
        synchronize(device)
    by_name: dict[str, list[float]] = {}
    for e in prof.events():
        if cuda and e.device_type == torch.autograd.DeviceType.CUDA:
            by_name.setdefault(e.name, []).append(e.device_time_total / 1e3)  # microseconds -> ms
        elif not cuda and e.name.startswith("aten::") and e.self_cpu_time_total > 0:
            by_name.setdefault(e.name, []).append(e.self_cpu_time_total / 1e3)
    top = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:12]
    matmul = ("gemm", "gemv", "nvjet", "cutlass", "sm90", "mm", "splitk", "linear")
    out.update({"kernel_ms": sum(sum(t) for t in by_name.values()) / steps,
                "kernels_per_step": sum(len(t) for t in by_name.values()) / steps,
                "matmul_kernel_ms": sum(sum(t) for n, t in by_name.items()
                                        if any(m in n.lower() for m in matmul)) / steps,
                "top_kernels": [{"name": n[:90], "ms_per_step": sum(t) / steps, "calls_per_step": len(t) / steps}
                                for n, t in top]})
    return out


def with_joins(products: RowProducts, setting: str) -> RowProducts:
    """The engine's products with its projection groups joined as measured, over every row count (to check
    the joined path wherever the timing would not choose it), or nowhere."""
    if setting == "measured":
        return products
    groups = tuple(group for _, group, _ in PROJECTION_GROUPS)
    return replace(products, joined={bucket: groups for bucket in ROW_BUCKETS + (PREFILL_BUCKET,)}
                   if setting == "every-row" else {})


def unjoined_profile(lm: LanguageModel, prompt: list[int]) -> dict:
    """`step_profile` of the same engine with its projection groups run as their parts: the joins' gain in
    this process (the step compiles again)."""
    products = lm.engine.products
    if not products.joined:
        return {"skipped": "nothing is joined"}
    lm.engine.use_products(with_joins(products, "off"))
    try:
        return step_profile(lm, prompt)
    finally:
        lm.engine.use_products(products)


def draft_costs(model, lm: LanguageModel, name: str, args, prompt: list[int]) -> tuple[DraftModel, object, dict]:
    """c of the skip draft and of each low-bit draft (alone and with the skips), v for widths 2..9."""
    layers = model.config.num_hidden_layers
    label, profile = skip_profile(name, layers)
    skip = DraftModel(model, profile)
    drafts = {f"skip: {label}": skip}
    for weights in args.draft_weights:
        low_bit = DraftModel(model, SkipProfile(layers, model=name), weights=weights)
        drafts[weights] = low_bit
        drafts[f"{weights} + skip"] = low_bit.with_profile(profile)
    costs = measure_draft_costs(model, drafts, prompt, max_k=8, reps=args.reps * 3, engine=lm.engine)
    skip_costs = costs[f"skip: {label}"]
    report = {"profile": label, "skipped": profile.skipped_sublayers, "c": skip_costs.c,
              "full_ms": skip_costs.full_seconds * 1e3,
              "c_by_draft": {d: costs[d].c for d in drafts},
              "draft_kernels": {w: drafts[w].lowbit.to_dict() for w in args.draft_weights},
              "v_by_width": {k + 1: v for k, v in skip_costs.v.items()}}
    return skip, skip_costs, report


def bench_shape(name: str, args, device: str, save) -> dict:
    """One shape, part by part; `save(result)` after each, so a timeout keeps what was measured."""
    shape = tiny(SHAPES[name]) if args.shape == "tiny" else SHAPES[name]
    dtype = getattr(torch, args.dtype) if args.dtype else torch.float32 if device == "cpu" else torch.bfloat16
    t0 = time.perf_counter()
    model = build_model(shape, dtype, device)
    model.generation_config.eos_token_id = None  # every method decodes the same number of tokens
    model.generation_config.pad_token_id = 0
    lm = LanguageModel(model, None, name)
    lm.engine = Engine(model, compile=args.compile, compile_backend=args.compile_backend, compile_mode=args.compile_mode)
    lm.engine.use_products(with_joins(lm.engine.products, args.join_projections))
    vocab, layers = model.config.vocab_size, model.config.num_hidden_layers
    prompts = [synthetic_prompt(vocab, args.context, seed) for seed in (1, 2)]
    result = {"shape": name, "dtype": str(dtype), "layers": layers, "errors": {}}

    def part(key: str, measure, report=lambda measured: measured):
        """Run one part; record `report(what it measured)` and return what it measured (None: skipped or failed)."""
        if key not in args.parts:
            return None
        progress(f"{name}: {key}")
        measured = None
        try:
            measured = measure()
            result[key] = report(measured)
        except Exception:  # recorded; the next part still runs
            result["errors"][key] = traceback.format_exc()
            print(result["errors"][key], file=sys.stderr, flush=True)
        result["engine"] = lm.engine.describe()
        result["seconds"] = time.perf_counter() - t0
        save(result)
        return measured

    part("floor", lambda: measure_floor(model).to_dict())
    part("methods", lambda: timed_methods(lm, args, prompts))
    if "floor" in result and "methods" in result:
        ar = result["methods"][AR]["decode_ms_per_token"]
        result["ar_over_floor"] = ar / (result["floor"]["seconds"] * 1e3) if ar else None
    part("profile", lambda: step_profile(lm, prompts[0]))
    part("unjoined", lambda: unjoined_profile(lm, prompts[0]))
    drafted = part("costs", lambda: draft_costs(model, lm, name, args, prompts[0]), report=lambda out: out[2])
    if drafted is not None:
        draft, costs, _ = drafted
        calibration = [synthetic_prompt(vocab, args.context, seed) for seed in (7, 8)]
        if part("planted", lambda: plant_redundancy(model, draft.profile, args.planted_acceptance, calibration)):
            part("synthetic_speculation", lambda: speculative_run(lm, draft, costs, args, prompts))
    return result


def progress(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def summary_lines(result: dict) -> list[str]:
    lines = [f"### {result['shape']} ({result['dtype']}, {result['layers']} layers)"]
    m, floor = result.get("methods"), result.get("floor")
    if m and floor and result.get("ar_over_floor"):
        lines.append(f"- autoregressive {m[AR]['decode_ms_per_token']:.2f} ms/token = {result['ar_over_floor']:.2f}x "
                     f"the floor {floor['seconds'] * 1e3:.2f} ms ({floor['how']}, {floor['weight_bytes'] / 1e6:.1f} MB)")
    if products := result.get("engine", {}).get("products"):
        lines.append(f"- products: {RowProducts.summary_of(products)}")
    for name, r in (m or {}).items():
        if name != AR:
            lines.append(f"- our AR vs {name}: {r['our_ar_speedup']:.2f}x (identical: {r['identical']})")
    if p := result.get("profile"):
        lines.append(f"- one-token step: {p['back_to_back_ms']:.2f} ms back to back, {p['synced_ms']:.2f} ms synced; "
                     f"kernels {p['kernel_ms']:.2f} ms/step ({p['kernels_per_step']:.0f} launches), "
                     f"matrix products {p['matmul_kernel_ms']:.2f} ms")
        for k in p["top_kernels"][:8]:
            lines.append(f"  - {k['ms_per_step']:.3f} ms x{k['calls_per_step']:.0f} {k['name'][:70]}")
    if (p := result.get("unjoined")) and "synced_ms" in p:
        lines.append(f"- the same step with q/k/v and gate/up as their parts: {p['back_to_back_ms']:.2f} ms back to "
                     f"back, {p['synced_ms']:.2f} ms synced; kernels {p['kernel_ms']:.2f} ms/step "
                     f"({p['kernels_per_step']:.0f} launches), matrix products {p['matmul_kernel_ms']:.2f} ms")
    if c := result.get("costs"):
        lines.append(f"- {c['profile']} ({c['skipped']} sublayers skipped): c = {c['c']:.3f}; "
                     + ", ".join(f"v({w}) = {v:.2f}" for w, v in c["v_by_width"].items()))
        lines.append("- c by draft: " + ", ".join(f"{d} {v:.3f}" for d, v in c["c_by_draft"].items()))
    if p := result.get("planted"):
        lines.append(f"- SYNTHETIC planted redundancy (scale {p['scale']:.4f}, draft agreement {p['agreement']:.2f}, "
                     f"target {p['target']:.2f}):")
    for name, r in result.get("synthetic_speculation", {}).items():
        a = "–" if r["a"] is None else f"{r['a']:.2f}"
        bound = "–" if r["bound"] is None else f"{r['bound']:.2f}x"
        eff = "–" if r["efficiency"] is None else f"{r['efficiency']:.2f}"
        lines.append(f"  - {name}: {r['speedup']:.2f}x, a = {a}, bound {bound}, efficiency {eff} "
                     f"(identical: {r['identical']})")
    lines.extend(f"- FAILED {key}: {text.strip().splitlines()[-1]}" for key, text in result["errors"].items())
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=("real", "tiny"), default="real",
                        help="real shapes (a GPU) or tiny ones on CPU (a test of the script)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="shapes, comma-separated")
    parser.add_argument("--planted-acceptance", type=float, default=0.9, help="draft agreement to plant (0..1)")
    parser.add_argument("--k", type=int, default=4, help="draft length of the synthetic run")
    parser.add_argument("--context", type=int, default=None, help="prompt tokens (real: 256; tiny: 32)")
    parser.add_argument("--tokens", type=int, default=None, help="new tokens per prompt (real: 64; tiny: 8)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (real: 3; tiny: 1)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="compiled steps (default: on for CUDA)")
    parser.add_argument("--compile-backend", choices=("inductor", "cudagraphs"), default="inductor",
                        help="torch.compile backend of the steps; cudagraphs captures the eager kernels (seconds "
                             "to compile, not minutes)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None,
                        help="where to run (default: cuda for real shapes, cpu for tiny ones; tiny shapes on "
                             "cuda in float32 check that every path decodes identically there)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="weights' dtype (default: float32 on cpu, bfloat16 on cuda)")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode of the inductor steps (default: the engine's; e.g. max-autotune)")
    parser.add_argument("--coordinate-descent", action="store_true",
                        help="inductor's coordinate-descent tuning of its kernels (as gpt-fast sets it)")
    parser.add_argument("--draft-weights", default="int8,int4",
                        help="low-bit draft weights to time c for (comma-separated; '' for none)")
    parser.add_argument("--generate-static", action=argparse.BooleanOptionalAction, default=None,
                        help="also time generate() static-compiled (default: on for real shapes)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"which parts to run (comma-separated; {', '.join(PARTS)})")
    parser.add_argument("--join-projections", choices=JOIN_SETTINGS, default="measured",
                        help="q/k/v and gate/up as one product each: where timing chose it, over every row "
                             "count (a check of that path), or nowhere")
    parser.add_argument("--out", default=None, help="folder for gpu_bench.json")
    args = parser.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(names) - set(SHAPES)
    if unknown or not names:
        parser.error(f"unknown shapes {sorted(unknown)}; known: {', '.join(SHAPES)}")
    if not 0 < args.planted_acceptance <= 1:
        parser.error("--planted-acceptance must be in (0, 1]")
    args.models = names
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if set(args.parts) - set(PARTS):
        parser.error(f"--parts takes {', '.join(PARTS)}")
    args.draft_weights = [w.strip() for w in args.draft_weights.split(",") if w.strip()]
    if set(args.draft_weights) - {"int8", "int4"}:
        parser.error("--draft-weights takes int8 and/or int4")
    real = args.shape == "real"
    args.context = args.context or (256 if real else 32)
    args.tokens = args.tokens or (64 if real else 8)
    args.reps = args.reps or (3 if real else 1)
    args.generate_static = real if args.generate_static is None else args.generate_static
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.coordinate_descent:  # this process only: a benchmark's explicit choice
        import torch._inductor.config as inductor_config

        inductor_config.coordinate_descent_tuning = True
    device = args.device or ("cuda" if args.shape == "real" and torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available() or args.shape == "real" and device == "cpu":
        print("no GPU here: real shapes need one (try --shape tiny)", file=sys.stderr)
        return 2
    report = {"device": machine_fingerprint(torch.device(device)), "shape": args.shape,
              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "results": [], "errors": []}
    print(f"## gpu_bench on {report['device']} ({args.shape} shapes)\n")
    def save(result: dict | None = None) -> None:
        if result is not None and all(r is not result for r in report["results"]):
            report["results"].append(result)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "gpu_bench.json").write_text(json.dumps(report, indent=1, default=str) + "\n")

    for name in args.models:
        try:
            result = bench_shape(name, args, device, save)
            print("\n".join(summary_lines(result)) + "\n", flush=True)
            report["errors"].extend(f"{name} {key}: {text}" for key, text in result["errors"].items())
        except Exception:  # one shape's failure must not lose the others' numbers on a lent machine
            report["errors"].append(f"{name}: {traceback.format_exc()}")
            print(report["errors"][-1], file=sys.stderr, flush=True)
        if device == "cuda":  # the compiled graphs hold the last model; let it go before the next
            torch._dynamo.reset()
            gc.collect()
            torch.cuda.empty_cache()
        save()
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
