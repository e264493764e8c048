"""Project self-speculative speedups on a GPU from measured draft and verification costs.

Random-initialised models with the real shapes of Llama-2-7B, Llama-2-13B and Qwen2.5-7B (bf16, no
download: timing does not depend on the weights' values) are timed with selfspec's own draft and
verification passes: c = draft forward / full forward (one token) for each skip profile, and
v(K) = full forward over K+1 tokens / full forward, K = 1..12, after a real-length context. The
speedup bound E/(K*c + v) (see selfspec/costmodel.py) is then evaluated for the acceptance rates
given with --acceptance (defaults: rates around those the paper reports) and the best K is shown.

    python scripts/gpu_projection.py --out gpu-projection      # on a CUDA machine, ~5 minutes on an H100
    python scripts/gpu_projection.py --tiny                    # the same code on tiny shapes, on CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfspec.costmodel import measure_costs, speedup_bound  # noqa: E402
from selfspec.draft import DraftModel  # noqa: E402
from selfspec.profile import SkipProfile, read_profile  # noqa: E402

PROFILES = Path(__file__).resolve().parent.parent / "profiles"

SHAPES = {
    "Llama-2-7B": dict(model_type="llama", num_hidden_layers=32, hidden_size=4096, intermediate_size=11008,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000),
    "Llama-2-13B": dict(model_type="llama", num_hidden_layers=40, hidden_size=5120, intermediate_size=13824,
                        num_attention_heads=40, num_key_value_heads=40, vocab_size=32000),
    "Qwen2.5-7B": dict(model_type="qwen2", num_hidden_layers=28, hidden_size=3584, intermediate_size=18944,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064),
}
TINY = dict(num_hidden_layers=8, hidden_size=64, intermediate_size=128, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512)

# The paper's published skip sets (bundled in profiles/) where one exists for the shape.
PAPER_PROFILES = {"Llama-2-13B": "meta-llama--Llama-2-13b-hf.json"}


def build_model(shape: dict, dtype: torch.dtype, device: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = dict(shape)
    config = AutoConfig.for_model(shape.pop("model_type"), **shape, max_position_embeddings=4096)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def profiles_for(name: str, layers: int) -> dict[str, SkipProfile]:
    """The paper's profile when bundled, plus even spreads skipping ~25% and ~45% of sublayers."""
    found = {}
    paper = PROFILES / PAPER_PROFILES.get(name, "-")
    if paper.is_file() and read_profile(paper).num_layers == layers:  # not in --tiny mode
        found["paper"] = read_profile(paper)
    for share in (0.25, 0.45):
        # Spread the skipped sublayers evenly over layers 1..L-2 (first and last stay whole),
        # alternating attention and MLP.
        count = int(share * 2 * layers)
        picks = [1 + (i * (layers - 2)) // count for i in range(count)]
        attn, mlp = sorted(set(picks[0::2])), sorted(set(picks[1::2]))
        found[f"even {int(share * 100)}%"] = SkipProfile(layers, attn=attn, mlp=mlp, model=name)
    return found


def project(costs, acceptances: list[float], max_k: int) -> dict:
    out = {}
    for a in acceptances:
        bounds = {k: speedup_bound(a, costs.c, costs.v[k], k) for k in range(1, max_k + 1)}
        best = max(bounds, key=bounds.get)
        out[f"{a:.2f}"] = {"best_k": best, "bound": bounds[best], "by_k": bounds}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(SHAPES), help="which shapes to time")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (a test of the script)")
    parser.add_argument("--context", type=int, default=None, help="tokens already in the cache (512; --tiny: 64)")
    parser.add_argument("--max-k", type=int, default=12)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--acceptance", default="0.6,0.75,0.85,0.93",
                        help="per-token acceptance rates to project with (comma-separated)")
    parser.add_argument("--out", default=None, help="folder for projection.json")
    args = parser.parse_args(argv)
    args.context = args.context or (64 if args.tiny else 512)

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    acceptances = [float(a) for a in args.acceptance.split(",")]
    card = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"## GPU projection on {card} ({dtype}, context {args.context})\n")
    print("| model | profile | skipped | full ms | c | v(4) | v(8) | v(12) | " +
          " | ".join(f"a={a:.2f}: best K, bound" for a in acceptances) + " |")
    print("|" + "---|" * (8 + len(acceptances)))
    results = {"device": card, "dtype": str(dtype), "context": args.context, "models": {}}
    for name in [m.strip() for m in args.models.split(",")]:
        shape = dict(SHAPES[name], **TINY) if args.tiny else SHAPES[name]
        t0 = time.perf_counter()
        model = build_model(shape, dtype, device)
        layers = model.config.num_hidden_layers
        prompt = [(i * 7919) % (model.config.vocab_size - 2) + 2 for i in range(args.context)]
        results["models"][name] = {}
        for label, profile in profiles_for(name, layers).items():
            costs = measure_costs(model, DraftModel(model, profile), prompt, args.max_k, args.reps)
            projection = project(costs, acceptances, args.max_k)
            results["models"][name][label] = {"profile": profile.to_dict(), "costs": costs.to_dict(),
                                              "projection": projection}
            v = costs.v
            print(f"| {name} | {label} | {profile.skipped_sublayers}/{2 * layers} | {costs.full_seconds * 1e3:.2f} "
                  f"| {costs.c:.3f} | {v.get(4, float('nan')):.2f} | {v.get(8, float('nan')):.2f} "
                  f"| {v.get(12, float('nan')):.2f} | " +
                  " | ".join(f"{p['best_k']}, {p['bound']:.2f}x" for p in projection.values()) + " |", flush=True)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
        print(f"<!-- {name}: {time.perf_counter() - t0:.0f} s -->", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "projection.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
