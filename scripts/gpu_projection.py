"""Project self-speculative speedups on a GPU from measured draft and verification costs.

Random-initialised models with the real shapes of Llama-2-7B, Llama-2-13B, CodeLlama-13B, Qwen2.5-7B
and Llama-2-70B (bf16, no download: timing does not depend on the weights' values) are timed with
selfspec's own draft and verification passes:

- c = draft forward / full forward (one token) for the paper's bundled skip sets and for even spreads;
- v(K) = full forward over K+1 tokens / full forward, K = 1..12, after a real-length context;
- the speedup bound E/(K*c + v) (selfspec/costmodel.py) for the acceptance rates given with
  --acceptance, and the best K.

Llama-2-70B does not fit one 80 GB card in bf16, so it is built with fewer layers of its real width
(--truncated-layers) and its costs are extrapolated: every decoder layer of a shape costs the same, so
timing the truncated model with all attention and with all MLP sublayers skipped gives the cost of one
attention sublayer, one MLP sublayer and the rest (embedding, head, overhead); c for the 80-layer
profile follows by adding them up. v(K) is taken from the truncated model (layers dominate both).

End to end (--e2e): our autoregressive loop, transformers' generate() and our self-speculative decoder
(adaptive exit and fixed K) on the same random model and prompts, via selfspec.bench: tokens/s,
speedup, greedy identity, and efficiency = measured speedup / bound for the acceptance the run
measured. Random weights make the acceptance meaningless as a forecast, but the efficiency shows
what the decoding loop itself loses on this device. --fp32-check repeats it in float32, where greedy
output must be token-identical.

    python scripts/gpu_projection.py --out gpu-projection      # on a CUDA machine, a few minutes on an H100
    python scripts/gpu_projection.py --tiny --e2e Llama-2-7B   # the same code on tiny shapes, on CPU
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


from selfspec.bench.report import markdown_table
from selfspec.bench.results import summarize_runs
from selfspec.bench.runner import ours_autoregressive, ours_self_speculative, run_methods, transformers_generate
from selfspec.bench.costmodel import Costs, measure_costs, speedup_bound
from selfspec.engine.settings import DraftSettings
from selfspec.engine.draft import DraftModel
from selfspec.models.loading import LanguageModel
from selfspec.profiles.schema import SkipProfile, read_profile

PROFILES = Path(__file__).resolve().parent.parent / "selfspec" / "profiles" / "bundled"


@dataclass(frozen=True)
class Shape:
    config: dict
    paper_profiles: tuple[str, ...] = ()  # bundled files with the paper's skip sets for this shape
    real_layers: int | None = None  # set when the model is built truncated to config's layer count


LLAMA_13B = dict(model_type="llama", num_hidden_layers=40, hidden_size=5120, intermediate_size=13824,
                 num_attention_heads=40, num_key_value_heads=40, vocab_size=32000)
SHAPES = {
    "Llama-2-13B": Shape(LLAMA_13B, ("meta-llama--Llama-2-13b-hf.json", "meta-llama--Llama-2-13b-chat-hf.json")),
    "Llama-2-70B": Shape(dict(model_type="llama", num_hidden_layers=16, hidden_size=8192, intermediate_size=28672,
                              num_attention_heads=64, num_key_value_heads=8, vocab_size=32000),
                         ("meta-llama--Llama-2-70b-hf.json",), real_layers=80),
    "Llama-2-7B": Shape(dict(model_type="llama", num_hidden_layers=32, hidden_size=4096, intermediate_size=11008,
                             num_attention_heads=32, num_key_value_heads=32, vocab_size=32000)),
    "CodeLlama-13B": Shape(dict(LLAMA_13B, vocab_size=32016, rope_theta=1e6), ("codellama--CodeLlama-13b-hf.json",)),
    "Qwen2.5-7B": Shape(dict(model_type="qwen2", num_hidden_layers=28, hidden_size=3584, intermediate_size=18944,
                             num_attention_heads=28, num_key_value_heads=4, vocab_size=152064)),
}
TINY = dict(num_hidden_layers=8, hidden_size=64, intermediate_size=128, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512)


def tiny(shape: Shape) -> Shape:
    return Shape(dict(shape.config, **TINY), (), 16 if shape.real_layers else None)


def build_model(shape: Shape, dtype: torch.dtype, device: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = dict(shape.config)
    config = AutoConfig.for_model(config.pop("model_type"), **config, max_position_embeddings=4096)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def even_spread(layers: int, share: float, model: str) -> SkipProfile:
    """Skip ~share of the 2L sublayers, spread evenly over layers 1..L-2, alternating attention and MLP."""
    count = int(share * 2 * layers)
    picks = [1 + (i * (layers - 2)) // count for i in range(count)]
    return SkipProfile(layers, attn=sorted(set(picks[0::2])), mlp=sorted(set(picks[1::2])), model=model)


def profiles_for(name: str, shape: Shape, layers: int) -> dict[str, SkipProfile]:
    """The paper's bundled profiles for the shape (when their layer count fits), plus even spreads."""
    found = {}
    for file in shape.paper_profiles:
        profile = read_profile(PROFILES / file)
        if profile.num_layers == layers:
            found[f"paper: {file.removesuffix('.json')}"] = profile
    for share in (0.25, 0.45):
        found[f"even {int(share * 100)}%"] = even_spread(layers, share, name)
    return found


@dataclass(frozen=True)
class SublayerUnits:
    """A truncated model's costs split up, in units of its full forward of one token."""

    attn: float  # one attention sublayer
    mlp: float  # one MLP sublayer
    rest: float  # embedding, head and per-call overhead
    measured: Costs  # the truncated model's own full-forward time and v(K)


def sublayer_units(model, prompt: list[int], max_k: int, reps: int) -> SublayerUnits:
    """Skipping all n attention sublayers leaves 1 - n*A of a forward, all MLP sublayers 1 - n*M."""
    n = model.config.num_hidden_layers
    no_attn = measure_costs(model, DraftModel(model, SkipProfile(n, attn=range(n))), prompt, max_k, reps)
    no_mlp = measure_costs(model, DraftModel(model, SkipProfile(n, mlp=range(n))), prompt, 1, reps)
    attn, mlp = (1 - no_attn.c) / n, (1 - no_mlp.c) / n
    return SublayerUnits(attn, mlp, 1 - n * (attn + mlp), no_attn)


def extrapolated_costs(units: SublayerUnits, profile: SkipProfile) -> Costs:
    """Costs of `profile` at its real depth, adding up the sublayers it keeps."""
    real = profile.num_layers
    full = units.rest + real * (units.attn + units.mlp)
    draft = units.rest + (real - len(profile.attn)) * units.attn + (real - len(profile.mlp)) * units.mlp
    seconds = units.measured.full_seconds
    return Costs(full_seconds=seconds * full, draft_seconds=seconds * draft, c=draft / full,
                 v=units.measured.v, context=units.measured.context)


def project(costs: Costs, acceptances: list[float], max_k: int) -> dict:
    out = {}
    for a in acceptances:
        bounds = {k: speedup_bound(a, costs.c, costs.v[k], k) for k in range(1, max_k + 1)}
        best = max(bounds, key=bounds.get)
        out[f"{a:.2f}"] = {"best_k": best, "bound": bounds[best], "by_k": bounds}
    return out


@dataclass
class Report:
    device: str
    dtype: str
    context: int
    models: dict = field(default_factory=dict)
    end_to_end: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)


def synthetic_prompt(vocab_size: int, length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(3, vocab_size) for _ in range(length)]


def projection_rows(name: str, shape: Shape, model, args, acceptances: list[float], report: Report) -> dict:
    layers = shape.real_layers or model.config.num_hidden_layers
    prompt = synthetic_prompt(model.config.vocab_size, args.context, 0)
    measured = {}
    units = sublayer_units(model, prompt, args.max_k, args.reps) if shape.real_layers else None
    for label, profile in profiles_for(name, shape, layers).items():
        if units:
            costs = extrapolated_costs(units, profile)
        else:
            costs = measure_costs(model, DraftModel(model, profile), prompt, args.max_k, args.reps)
        projection = project(costs, acceptances, args.max_k)
        measured[label] = (profile, costs)
        report.models.setdefault(name, {})[label] = {
            "profile": profile.to_dict(), "costs": costs.to_dict(), "projection": projection,
            "extrapolated_from": asdict(units) if units else None}
        v = costs.v
        print(f"| {name}{' *' if shape.real_layers else ''} | {label} | {profile.skipped_sublayers}/{2 * layers} "
              f"| {costs.full_seconds * 1e3:.2f} | {costs.c:.3f} | {v[min(4, args.max_k)]:.2f} "
              f"| {v[min(8, args.max_k)]:.2f} | {v[args.max_k]:.2f} | " +
              " | ".join(f"{p['best_k']}, {p['bound']:.2f}x" for p in projection.values()) + " |", flush=True)
    return measured


def end_to_end(name: str, model, profile: SkipProfile, costs: Costs, args) -> str:
    """Our AR loop, generate() and self-speculation (adaptive, fixed K) on random prompts; a bench table."""
    lm = LanguageModel(model, None, name)
    model.generation_config.eos_token_id = None  # every method decodes exactly the same number of tokens
    model.generation_config.pad_token_id = 0
    if args.redundant is not None:
        make_skipped_sublayers_small(model, profile, args.redundant)
    draft = DraftModel(model, profile)
    k = args.e2e_k
    methods = [ours_autoregressive(lm), transformers_generate(lm, "transformers generate"),
               ours_self_speculative(lm, f"self-spec K={k} adaptive", draft, DraftSettings(max_draft=k, context_tokens=0)),
               ours_self_speculative(lm, f"self-spec K={k} fixed", draft,
                                     DraftSettings(max_draft=k, exit="off", threshold=0.0, context_tokens=0))]
    prompts = [synthetic_prompt(model.config.vocab_size, args.context, seed) for seed in (1, 2)]
    runs = run_methods(methods, prompts, args.e2e_tokens, args.e2e_reps, lm.device, progress=False)
    costs_by = {(m.name, c): costs for m in methods[2:] for c in ("random", "all")}
    rows = summarize_runs(methods, ["random"] * len(prompts), runs, costs_by)
    rows = [r for r in rows if r.category == "all"]
    return markdown_table(rows) + "\n\nnew tokens: " + ", ".join(f"{r.method} {r.new_tokens}" for r in rows)


def make_skipped_sublayers_small(model, profile: SkipProfile, scale: float) -> None:
    """Scale the output projections of the sublayers the profile skips, so that skipping them changes little.

    Random weights give a draft that never agrees with the full model; a trained model's skipped
    sublayers matter little, which this imitates so that the loop runs at a realistic acceptance.
    """
    layers = model.model.layers
    with torch.no_grad():
        for i in profile.attn:
            layers[i].self_attn.o_proj.weight.mul_(scale)
        for i in profile.mlp:
            layers[i].mlp.down_proj.weight.mul_(scale)


def run_model(name: str, shape: Shape, args, device: str, acceptances: list[float], report: Report) -> None:
    t0 = time.perf_counter()
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    model = build_model(shape, dtype, device)
    measured = projection_rows(name, shape, model, args, acceptances, report)
    if name in args.e2e and not shape.real_layers:
        label, (profile, costs) = next(iter(measured.items()))  # the paper's where there is one
        report.end_to_end[f"{name} {dtype} | {label}"] = end_to_end(name, model, profile, costs, args)
    del model
    if name in args.fp32_check and not shape.real_layers and dtype != torch.float32:
        if device == "cuda":
            torch.cuda.empty_cache()
        model = build_model(shape, torch.float32, device)
        label, profile = next(iter(profiles_for(name, shape, model.config.num_hidden_layers).items()))
        costs = measure_costs(model, DraftModel(model, profile), synthetic_prompt(model.config.vocab_size,
                                                                                    args.context, 0), args.max_k, 3)
        report.end_to_end[f"{name} torch.float32 | {label}"] = end_to_end(name, model, profile, costs, args)
        del model
    if device == "cuda":
        torch.cuda.empty_cache()
    print(f"<!-- {name}: {time.perf_counter() - t0:.0f} s -->", file=sys.stderr, flush=True)


def _names(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = set(names) - set(SHAPES)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown shapes {sorted(unknown)}; known: {', '.join(SHAPES)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=_names, default=list(SHAPES), help="which shapes to time")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (a test of the script)")
    parser.add_argument("--context", type=int, default=None, help="tokens already in the cache (512; --tiny: 64)")
    parser.add_argument("--max-k", type=int, default=12)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--acceptance", default="0.6,0.76,0.85,0.93",
                        help="per-token acceptance rates to project with (comma-separated)")
    parser.add_argument("--e2e", type=_names, default=[], help="shapes to also decode end to end (bf16)")
    parser.add_argument("--fp32-check", type=_names, default=[], help="shapes to also decode in float32")
    parser.add_argument("--redundant", type=float, default=None,
                        help="end to end: scale the skipped sublayers' output projections by this (e.g. 0.05)")
    parser.add_argument("--e2e-k", type=int, default=4)
    parser.add_argument("--e2e-tokens", type=int, default=96)
    parser.add_argument("--e2e-reps", type=int, default=3)
    parser.add_argument("--out", default=None, help="folder for projection.json")
    args = parser.parse_args(argv)
    if args.e2e_k > args.max_k:
        parser.error(f"--e2e-k {args.e2e_k} needs v measured up to it: --max-k must be at least {args.e2e_k}")
    args.context = args.context or (64 if args.tiny else 512)
    if args.tiny:
        args.e2e_tokens = min(args.e2e_tokens, 16)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    acceptances = [float(a) for a in args.acceptance.split(",")]
    card = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    report = Report(card, "torch.float32" if device == "cpu" else "torch.bfloat16", args.context)
    print(f"## GPU projection on {card} ({report.dtype}, context {args.context})\n")
    print("| model | profile | skipped | full ms | c | v(4) | v(8) | v(12) | " +
          " | ".join(f"a={a:.2f}: best K, bound" for a in acceptances) + " |")
    print("|" + "---|" * (8 + len(acceptances)), flush=True)
    for name in args.models:
        try:
            run_model(name, tiny(SHAPES[name]) if args.tiny else SHAPES[name], args, device, acceptances, report)
        except Exception:  # one shape's failure must not lose the others' numbers on a lent machine
            report.errors.append(f"{name}: {traceback.format_exc()}")
            print(report.errors[-1], file=sys.stderr, flush=True)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "projection.json").write_text(json.dumps(asdict(report), indent=1) + "\n")
    print("\n(* extrapolated from a model of the same width with fewer layers)")
    for label, table in report.end_to_end.items():
        print(f"\n### End to end: {label}, random weights, {args.context}-token random prompts\n\n{table}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
