"""`python -m selfspec bench`: our decoders against transformers' own, on one model, in one run.

Methods run in turn (never at once) on the same prompts, after a warm-up of each; every prompt is
timed `reps` times and the median kept. All methods are greedy, so each one's output is compared
token for token with our autoregressive loop's. Per method and category the table gives tokens/s,
the speedup against our autoregressive loop *from the same run*, and for self-speculation the
acceptance numbers and the cost model (see costmodel.py): c and v measured by timing single forwards
on the category's first prompt, a estimated from the run, the bound E/(K*c+v) and efficiency =
speedup / bound.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from selfspec.bench.prompts import CATEGORIES, BenchPrompt, builtin_suite, read_jsonl
from selfspec.bench.costmodel import Costs, acceptance_per_token, bound_for_lengths, measure_costs
from selfspec.bench.floor import Floor, measure_floor
from selfspec.engine.verify_products import VerifyProducts
from selfspec.engine.decoding import autoregressive, self_speculative
from selfspec.engine.settings import EXIT_RULES, DraftSettings
from selfspec.engine.draft import DraftModel, VocabularyHead
from selfspec.models.environment import device_name, library_versions
from selfspec.models.loading import LanguageModel, load_model
from selfspec.profiles.calibration import builtin_prompts
from selfspec.profiles.draft_weights import WEIGHT_CHOICES, build_draft
from selfspec.profiles.schema import SkipProfile
from selfspec.engine.records import StepRecord
from selfspec.bench.vocabulary import choose_vocabulary, read_vocabulary, vocabulary_size, write_vocabulary

AR = "autoregressive"


@dataclass
class Run:
    """One method on one prompt: the median time over repetitions and what it produced."""

    tokens: list[int]
    seconds: float
    records: list[StepRecord] | None = None  # our decoders only (the last repetition's)


@dataclass
class Method:
    name: str
    decode: Callable[[list[int], int], tuple[list[int], list[StepRecord] | None]]
    draft: DraftModel | None = None
    settings: DraftSettings | None = None
    compiled: bool = False  # warmed up on every prompt at full length, so no timed run compiles


@dataclass
class Row:
    method: str
    category: str
    prompts: int
    new_tokens: int
    seconds: float
    tokens_per_second: float
    speedup: float | None
    identical: bool
    acceptance: float | None = None  # accepted / drafted
    mean_accepted_tokens: float | None = None  # tokens committed per verification
    a: float | None = None
    c: float | None = None
    v: float | None = None  # for the run's max draft length K
    bound: float | None = None
    efficiency: float | None = None
    extra: dict = field(default_factory=dict)


# --- methods ------------------------------------------------------------------------------------


def encode_chat(lm: LanguageModel, prompt: BenchPrompt) -> list[int]:
    if getattr(lm.tokenizer, "chat_template", None):
        ids = lm.tokenizer.apply_chat_template(list(prompt.messages), add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return list(lm.tokenizer(prompt.text)["input_ids"])


def ours_autoregressive(lm: LanguageModel) -> Method:
    def decode(ids, n):
        records = list(autoregressive(lm.model, ids, n, engine=lm.engine))
        return [t for r in records for t in r.token_ids], records
    return Method(AR, decode, compiled=lm.engine.steps is not None)


def ours_self_speculative(lm: LanguageModel, name: str, draft: DraftModel, settings: DraftSettings) -> Method:
    def decode(ids, n):
        records = list(self_speculative(lm.model, ids, draft, n, settings=settings, engine=lm.engine))
        return [t for r in records for t in r.token_ids], records
    return Method(name, decode, draft, settings, compiled=lm.engine.steps is not None)


def transformers_generate(lm: LanguageModel, name: str, compiled: bool = False, **options) -> Method:
    """transformers' `generate()` (greedy) on the same model object, with peer options if any."""
    model = lm.model
    pad = model.generation_config.pad_token_id
    if pad is None:
        pad = model.generation_config.eos_token_id
        pad = pad[0] if isinstance(pad, list) else pad

    @torch.inference_mode()
    def decode(ids, n):
        inputs = torch.tensor([ids], device=lm.device)
        out = model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=n,
                             do_sample=False, pad_token_id=pad, **options)
        return out[0, len(ids):].tolist(), None
    return Method(name, decode, compiled=compiled)


def transformers_generate_static_compiled(lm: LanguageModel) -> Method:
    """`generate()` at its fastest: a static cache and a compiled forward (on CPU too)."""
    from transformers import CompileConfig

    config = CompileConfig(mode="reduce-overhead" if lm.device.type == "cuda" else "default")
    config._compile_all_devices = True  # transformers' own switch to compile off CUDA as well
    return transformers_generate(lm, "generate static compiled", compiled=True,
                                 cache_implementation="static", compile_config=config)


# --- running ------------------------------------------------------------------------------------


def run_methods(methods: Sequence[Method], prompts: Sequence[list[int]], max_new_tokens: int, reps: int,
                warmup_tokens: int = 8, progress: bool = True) -> dict[str, list[Run]]:
    """Every method on every prompt, `reps` times; the median time per method and prompt is kept.

    Methods run one after another, never at once. They are interleaved (each repetition runs every
    prompt with every method in turn) so that load that drifts on a shared machine falls on all
    methods alike instead of on whichever happened to run during it. Each is warmed up first.
    """
    from tqdm.auto import tqdm

    for method in methods:
        method.decode(prompts[0], warmup_tokens)
        if method.compiled:  # every shape the timed runs will meet, longest first (static caches fit it)
            for ids in sorted(prompts, key=len, reverse=True):
                method.decode(ids, max_new_tokens)
    seconds = {m.name: [[] for _ in prompts] for m in methods}
    outputs: dict[str, list] = {m.name: [None] * len(prompts) for m in methods}
    with tqdm(total=len(methods) * len(prompts) * reps, desc="bench", unit="run", disable=not progress) as bar:
        for _ in range(reps):
            for i, ids in enumerate(prompts):
                for method in methods:
                    t0 = time.perf_counter()
                    outputs[method.name][i] = method.decode(ids, max_new_tokens)
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    seconds[method.name][i].append(time.perf_counter() - t0)
                    bar.update()
    return {name: [Run(tokens, statistics.median(s), records) for (tokens, records), s in zip(outputs[name], times)]
            for name, times in seconds.items()}


def summarize_runs(methods: Sequence[Method], categories: Sequence[str], runs: dict[str, list[Run]],
                   costs: dict[tuple[str, str], Costs]) -> list[Row]:
    """One row per method and category (and "all"), speedups against this run's autoregressive."""
    groups = {c: [i for i, cat in enumerate(categories) if cat == c] for c in dict.fromkeys(categories)}
    groups["all"] = list(range(len(categories)))
    rows = []
    for category, index in groups.items():
        base = _throughput(runs[AR], index)
        for method in methods:
            mine = [runs[method.name][i] for i in index]
            tps = _throughput(runs[method.name], index)
            row = Row(
                method=method.name, category=category, prompts=len(index),
                new_tokens=sum(len(r.tokens) for r in mine), seconds=sum(r.seconds for r in mine),
                tokens_per_second=tps, speedup=tps / base if base else None,
                identical=all(r.tokens == runs[AR][i].tokens for r, i in zip(mine, index)),
            )
            if method.draft is not None:
                records = [r.records for r in mine]
                _add_speculation(row, method, records, costs.get((method.name, category)))
                _add_in_run_costs(row, records, [runs[AR][i].records for i in index])
            rows.append(row)
    return rows


def _throughput(runs: list[Run], index: list[int]) -> float:
    seconds = sum(runs[i].seconds for i in index)
    return sum(len(runs[i].tokens) for i in index) / seconds if seconds else 0.0


def _add_speculation(row: Row, method: Method, records: list[list[StepRecord]], costs: Costs | None) -> None:
    steps = [r for rs in records for r in rs if r.kind == "speculate"]
    drafted, accepted = sum(r.drafted for r in steps), sum(r.accepted for r in steps)
    row.acceptance = accepted / drafted if drafted else None
    row.mean_accepted_tokens = sum(len(r.token_ids) for r in steps) / len(steps) if steps else None
    row.a = acceptance_per_token(steps)
    # What the loop itself paid, in the same units, for comparison with the isolated forwards.
    row.extra = {"plain_steps": sum(1 for rs in records for r in rs if r.kind == "decode"),
                 "draft_extra_bytes": method.draft.extra_bytes,"draft_seconds_per_token": sum(r.draft_seconds for r in steps) / drafted if drafted else None,
                 "verify_seconds_per_step": sum(r.verify_seconds for r in steps) / len(steps) if steps else None,
                 "mean_drafted": drafted / len(steps) if steps else None}
    if costs is None or row.a is None:
        return
    k = method.settings.max_draft
    row.c, row.v = costs.c, costs.v[k]
    row.bound = bound_for_lengths(row.a, costs.c, costs.v, [r.drafted for r in steps])
    row.efficiency = row.speedup / row.bound if row.bound and row.speedup else None


def decode_seconds_per_token(records: list[list[StepRecord]]) -> float | None:
    """Wall time per token after the prefill, every step's overhead included (the prefill is left out)."""
    seconds = sum(rs[-1].elapsed_seconds - rs[0].elapsed_seconds for rs in records if rs)
    tokens = sum(len(r.token_ids) for rs in records for r in rs[1:])
    return seconds / tokens if tokens else None


def _add_in_run_costs(row: Row, records: list[list[StepRecord]], ar_records: list[list[StepRecord]]) -> None:
    """c, v, the bound and the efficiency as the decoder itself paid them, prefill excluded on both sides.

    Unit: this run's autoregressive decode time per token. Unlike the isolated timings these are
    interleaved with the baseline, so load that comes and goes on a shared machine does not skew
    them; and since the bound counts only the forward passes while the decode speedup counts the
    whole loop, efficiency_in_run is exactly the share the loop keeps of what its forwards allow.
    """
    e = row.extra
    ar_unit, mine = decode_seconds_per_token(ar_records), decode_seconds_per_token(records)
    if not ar_unit or not mine or e.get("draft_seconds_per_token") is None:
        return
    e["c_in_run"] = e["draft_seconds_per_token"] / ar_unit
    e["v_in_run"] = e["verify_seconds_per_step"] / ar_unit
    e["decode_speedup"] = ar_unit / mine
    lengths = [r.drafted for rs in records for r in rs if r.kind == "speculate"]
    if row.a is not None and lengths:
        v = {n: e["v_in_run"] for n in set(lengths)}  # the mean verification, whatever the step's length
        e["bound_in_run"] = bound_for_lengths(row.a, e["c_in_run"], v, lengths)
        e["efficiency_in_run"] = e["decode_speedup"] / e["bound_in_run"]


def measure_category_costs(lm: LanguageModel, methods: Sequence[Method], categories: Sequence[str],
                           prompts: Sequence[list[int]], reps: int) -> dict[tuple[str, str], Costs]:
    """c and v per speculative method, on each category's first prompt (context length matters)."""
    first = {c: prompts[categories.index(c)] for c in dict.fromkeys(categories)}
    first["all"] = sorted(prompts, key=len)[len(prompts) // 2]  # the median-length prompt
    return {(m.name, c): measure_costs(lm.model, m.draft, ids, m.settings.max_draft, reps, engine=lm.engine)
            for m in methods if m.draft is not None for c, ids in first.items()}


# --- output -------------------------------------------------------------------------------------


COLUMNS = ("method", "category", "tok/s", "speedup", "identical", "accept", "tokens/verify", "plain steps",
           "a", "c", "v", "bound", "efficiency", "bound in-run", "efficiency in-run")


def _fmt(x, digits=2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in sorted(rows, key=lambda r: (r.category == "all", r.category)):
        cells = [r.method, r.category, _fmt(r.tokens_per_second, 1),
                 _fmt(r.speedup) + ("x" if r.speedup is not None else ""), "yes" if r.identical else "NO",
                 _fmt(r.acceptance), _fmt(r.mean_accepted_tokens), str(r.extra.get("plain_steps", "–")), _fmt(r.a), _fmt(r.c, 3), _fmt(r.v),
                 _fmt(r.bound), _fmt(r.efficiency), _fmt(r.extra.get("bound_in_run")),
                 _fmt(r.extra.get("efficiency_in_run"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_charts(rows: Sequence[Row], out: Path, title: str) -> list[Path]:
    """Plotly charts: speedup per category and method; measured vs bound for self-speculation."""
    import plotly.graph_objects as go

    categories = list(dict.fromkeys(r.category for r in rows))
    speed = go.Figure([go.Bar(name=m, x=categories,
                              y=[next((r.speedup for r in rows if r.method == m and r.category == c), None)
                                 for c in categories])
                       for m in dict.fromkeys(r.method for r in rows)])
    speed.add_hline(y=1.0, line_dash="dot")
    speed.update_layout(barmode="group", title=f"Speedup vs our autoregressive loop — {title}",
                        yaxis_title="speedup (x)")
    spec = [r for r in rows if r.bound is not None]
    bound = go.Figure()
    for m in dict.fromkeys(r.method for r in spec):
        mine = [r for r in spec if r.method == m]
        bound.add_bar(name=f"{m} measured", x=[r.category for r in mine], y=[r.speedup for r in mine])
        bound.add_scatter(name=f"{m} bound E/(Kc+v)", x=[r.category for r in mine], y=[r.bound for r in mine],
                          mode="markers", marker_symbol="line-ew-open", marker_size=28)
    bound.update_layout(barmode="group", title=f"Self-speculation: measured speedup vs cost-model bound — {title}",
                        yaxis_title="speedup (x)")
    written = []
    for name, fig in (("speedup", speed), ("bound", bound)):
        path = out / f"{name}.html"
        fig.write_html(path, include_plotlyjs="cdn")
        written.append(path)
        try:  # PNG only when an image engine (kaleido) is installed
            fig.write_image(out / f"{name}.png")
            written.append(out / f"{name}.png")
        except Exception:
            pass
    return written


# --- the command --------------------------------------------------------------------------------


def build_methods(lm: LanguageModel, profile: SkipProfile, settings: Sequence[DraftSettings],
                  vocabs: Sequence[list[int] | None], names: Sequence[str], prompt_lookup: int,
                  early_exit: int) -> list[Method]:
    """Our AR loop first, then the peers asked for; self-speculation once per draft vocabulary, draft
    weights (`settings[i].draft_weights`, None meaning full) and settings.

    With settings of several exit rules, each method's name says its exit.
    """
    several_exits = len({s.exit for s in settings}) > 1
    several_weights = len({s.draft_weights or "full" for s in settings}) > 1
    methods = [ours_autoregressive(lm)]
    if "generate" in names:
        methods.append(transformers_generate(lm, "transformers generate"))
    if "generate-static" in names:
        methods.append(transformers_generate_static_compiled(lm))
    if "self-speculative" in names:
        calibration = lm.encode(builtin_prompts()[2]) if any(s.draft_weights == "auto" for s in settings) else ()
        for vocab in vocabs:
            head = None if vocab is None else VocabularyHead(lm.model, vocab)
            for weights in dict.fromkeys(s.draft_weights or "full" for s in settings):
                draft, choice = build_draft(lm.model, profile, weights, calibration_ids=calibration, key=lm.name,
                                            max_draft=max(s.max_draft for s in settings), head=head)
                named = several_weights or weights != "full"
                for s in [s for s in settings if (s.draft_weights or "full") == weights]:
                    label = (f"self-spec K={s.max_draft}" + ("" if vocab is None else f" V={len(vocab)}")
                             + (f" {weights}" if named else "") + (f"={choice.weights}" if choice else "")
                             + (f" {s.exit}" if several_exits else ""))
                    methods.append(ours_self_speculative(lm, label, draft, s))
    if "prompt-lookup" in names:
        methods.append(transformers_generate(lm, f"prompt lookup n={prompt_lookup}",
                                             prompt_lookup_num_tokens=prompt_lookup))
    if "early-exit" in names:
        methods.append(transformers_generate(lm, f"early exit E={early_exit}", assistant_early_exit=early_exit))
    return methods


def bench(lm: LanguageModel, prompts: Sequence[BenchPrompt], methods: Sequence[Method], max_new_tokens: int,
          reps: int, progress: bool = True) -> tuple[list[Row], dict]:
    ids = [encode_chat(lm, p) for p in prompts]
    categories = [p.category for p in prompts]
    runs = run_methods(methods, ids, max_new_tokens, reps, progress=progress)
    costs = measure_category_costs(lm, methods, categories, ids, reps=max(reps, 5))
    rows = summarize_runs(methods, categories, runs, costs)
    floor = measure_floor(lm.model, reps=max(reps, 5))
    detail = {"engine": lm.engine.describe(), "floor": floor.to_dict(),
              "overhead": step_overhead(runs, costs, floor),
              "costs": {f"{m} | {c}": cost.to_dict() for (m, c), cost in costs.items()},
              "outputs": {m: [{"category": cat, "prompt_tokens": len(i), "tokens": r.tokens, "seconds": r.seconds}
                              for cat, i, r in zip(categories, ids, rs)] for m, rs in runs.items()}}
    return rows, detail


def step_overhead(runs: dict[str, list[Run]], costs: dict[tuple[str, str], Costs], floor: Floor) -> dict:
    """Our autoregressive ms/token against the floor of the same run, and c, v of each speculative method."""
    ar = decode_seconds_per_token([r.records for r in runs[AR]])
    out = {"ar_ms_per_token": ar * 1e3 if ar else None, "floor_ms": floor.seconds * 1e3,
           "ar_over_floor": ar / floor.seconds if ar else None}
    out["methods"] = {m: {"c": cost.c, "v": cost.v} for (m, c), cost in costs.items() if c == "all"}
    return out


def overhead_lines(detail: dict) -> list[str]:
    """What bench prints under its table: the engine, the floor and the step costs."""
    engine, floor, over = detail["engine"], detail["floor"], detail["overhead"]
    compiled = engine["compiled"] if engine["compiled"] == "off" else "on"
    products = VerifyProducts.summary_of(engine["verify_products"])
    lines = [f"engine: {engine['cache']} cache, compiled {compiled}; verification products: {products}"]
    if over["ar_ms_per_token"] is not None:
        lines.append(f"autoregressive {over['ar_ms_per_token']:.1f} ms/token = {over['ar_over_floor']:.2f}x the floor "
                     f"of {over['floor_ms']:.1f} ms ({floor['how']}, {floor['weight_bytes'] / 1e6:.0f} MB, this run)")
    for name, cv in over["methods"].items():
        v = ", ".join(f"v({k + 1})={x:.2f}" for k, x in sorted((int(k), x) for k, x in cv["v"].items()))
        lines.append(f"{name}: c={cv['c']:.3f}; {v}")
    return lines


def machine(lm: LanguageModel) -> dict:
    return {"device": device_name(lm.model), "versions": library_versions()}


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def _exit_rules(text: str) -> list[str]:
    rules = [x.strip() for x in text.split(",") if x.strip()]
    unknown = set(rules) - set(EXIT_RULES)
    if not rules or unknown:
        raise argparse.ArgumentTypeError(f"exit rules are {', '.join(EXIT_RULES)}; got {text!r}")
    return rules


def _weights_list(text: str) -> list[str]:
    weights = [x.strip() for x in text.split(",") if x.strip()]
    if not weights or set(weights) - set(WEIGHT_CHOICES):
        raise argparse.ArgumentTypeError(f"draft weights are {', '.join(WEIGHT_CHOICES)}; got {text!r}")
    return weights


METHOD_NAMES = ("generate", "generate-static", "self-speculative", "prompt-lookup", "early-exit")


def register(commands) -> None:
    from selfspec.cli import add_engine_arguments, add_fetch_argument, add_model_arguments, add_profile_arguments

    p = commands.add_parser("bench", help="benchmark our decoders against transformers' on a prompt suite")
    add_model_arguments(p)
    add_engine_arguments(p)
    add_fetch_argument(p)
    add_profile_arguments(p)
    p.add_argument("--prompts", default=None, help="JSONL file of prompts (default: the built-in suite)")
    p.add_argument("--categories", default=",".join(CATEGORIES), help="built-in categories to run")
    p.add_argument("--per-category", type=int, default=2, help="built-in prompts per category (max 3)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per prompt (the median is kept)")
    p.add_argument("--methods", default=",".join(m for m in METHOD_NAMES if m != "generate-static"),
                   help=f"which of {', '.join(METHOD_NAMES)} to run besides our autoregressive loop "
                        "(generate-static compiles for minutes on a CPU, so it is not in the default)")
    p.add_argument("--max-draft", type=_int_list, default=None,
                   help="K for self-speculation; a list runs each (default: the profile's)")
    p.add_argument("--draft-vocab", default="0",
                   help="draft head vocabulary sizes (0 = full head), comma-separated, or a vocabulary JSON file")
    p.add_argument("--exit", type=_exit_rules, default=None,
                   help=f"draft-exit rule: {', '.join(EXIT_RULES)}; a comma-separated list runs each "
                        "(default: the profile's)")
    p.add_argument("--threshold", type=float, default=None,
                   help="draft-exit threshold, or the adaptive rule's start (default: the profile's)")
    p.add_argument("--draft-weights", type=_weights_list, default=["full", "int8", "int4"],
                   help="draft weights to run, comma-separated, of full, int8, int4 and auto")
    p.add_argument("--controller", action=argparse.BooleanOptionalAction, default=True,
                   help="choose each step's draft length from measured costs, 0 = a plain step (default: on)")
    p.add_argument("--prompt-lookup", type=int, default=10, help="prompt_lookup_num_tokens for the peer")
    p.add_argument("--early-exit", type=int, default=None, help="assistant_early_exit layer (default: half)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", default=None, help="folder for bench.json and the charts")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=cmd_bench)


def draft_vocabularies(lm: LanguageModel, spec: str, out: Path | None) -> list[list[int] | None]:
    if Path(spec).suffix == ".json":
        return [read_vocabulary(spec)]
    sizes = _int_list(spec)
    vocabs = []
    for size in sizes:
        if size == 0 or size >= vocabulary_size(lm):
            vocabs.append(None)
            continue
        ids = choose_vocabulary(lm, size)
        if out is not None:
            write_vocabulary(out / f"vocab-{size}.json", ids, lm.name, "selfspec.bench.vocabulary.choose_vocabulary")
        vocabs.append(ids)
    return vocabs


def cmd_bench(args: argparse.Namespace) -> int:
    from selfspec.cli import profile_from, use_engine_arguments

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.reps < 1 or args.max_new_tokens < 1:
        raise ValueError("--reps and --max-new-tokens must be positive")
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(names) - set(METHOD_NAMES)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; known: {', '.join(METHOD_NAMES)}")
    prompts = (read_jsonl(args.prompts) if args.prompts else
               builtin_suite(args.per_category, tuple(c.strip() for c in args.categories.split(","))))
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    lm = load_model(args.model, dtype=args.dtype, device=args.device, fetch=args.fetch)
    use_engine_arguments(args, lm)
    profile = profile_from(args, lm)
    early_exit = args.early_exit or lm.model.config.num_hidden_layers // 2
    settings = [DraftSettings.from_profile(profile, max_draft=k, exit=rule, threshold=args.threshold,
                                           controller=args.controller, draft_weights=weights)
                for weights in args.draft_weights for k in args.max_draft or [None] for rule in args.exit or [None]]
    methods = build_methods(lm, profile, settings, draft_vocabularies(lm, args.draft_vocab, out),
                            names, args.prompt_lookup, early_exit)
    rows, detail = bench(lm, prompts, methods, args.max_new_tokens, args.reps, progress=not args.no_progress)
    title = f"{lm.name}, {args.dtype}, {machine(lm)['device']}"
    print(f"## {title}\n")
    exits = list(dict.fromkeys(s.exit for s in settings))
    print(f"profile: attn={list(profile.attn)} mlp={list(profile.mlp)}; exit={','.join(exits)}; "
          f"controller={'on' if args.controller else 'off'}; "
          f"{len(prompts)} prompts, {args.max_new_tokens} new tokens, median of {args.reps} reps\n")
    print(markdown_table(rows))
    print("\n" + "\n".join(overhead_lines(detail)))
    if out is not None:
        report = {"model": lm.name, "dtype": args.dtype, "machine": machine(lm), "profile": profile.to_dict(),
                  "settings": {"max_new_tokens": args.max_new_tokens, "reps": args.reps, "exit": exits,
                               "threshold": settings[0].threshold,
                               "max_draft": list(dict.fromkeys(s.max_draft for s in settings)),
                               "draft": [asdict(s) for s in settings]},
                  "drafts": {m.name: {"draft_weights": m.draft.weights, "draft_extra_bytes": m.draft.extra_bytes,
                                      "kernels": m.draft.lowbit.kernels if m.draft.lowbit else {}}
                             for m in methods if m.draft is not None},
                  "rows": [asdict(r) for r in rows], **detail}
        (out / "bench.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        charts = write_charts(rows, out, title)
        print(f"\nwrote {out / 'bench.json'}, " + ", ".join(str(p) for p in charts))
    return 0
