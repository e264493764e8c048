"""Running the benchmark: our decoders against transformers' own, on one model, in one run.

Methods run in turn (never at once) on the same prompts, after a warm-up of each; every prompt is
timed `reps` times and the median kept. All methods are greedy, so each one's output is compared
token for token with our autoregressive loop's. Per method and category the table gives tokens/s,
the speedup against our autoregressive loop *from the same run*, and for self-speculation the
acceptance numbers and the cost model (see costmodel.py): c and v measured by timing single forwards
on the category's first prompt, a estimated from the run, the bound E/(K*c+v) and efficiency =
speedup / bound.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from selfspec.bench.costmodel import Costs, measure_costs
from selfspec.bench.floor import Floor, measure_floor, median_floor
from selfspec.bench.prompts import BenchPrompt
from selfspec.bench.results import AR, Row, Run, summarize_runs
from selfspec.engine.decoding import autoregressive, self_speculative
from selfspec.engine.devices import synchronize
from selfspec.engine.draft import DraftModel, VocabularyHead
from selfspec.engine.metrics import decode_metrics
from selfspec.engine.records import StepRecord
from selfspec.engine.settings import DraftSettings
from selfspec.models.loading import LanguageModel
from selfspec.profiles.draft_weights import build_draft, calibration_ids
from selfspec.profiles.schema import SkipProfile


@dataclass
class Method:
    name: str
    decode: Callable[[list[int], int], tuple[list[int], list[StepRecord] | None]]
    draft: DraftModel | None = None
    settings: DraftSettings | None = None
    compiled: bool = False  # warmed up on every prompt at full length, so no timed run compiles
    warm_up: Callable[[int, int], None] | None = None  # (prompt length, new tokens): compile every step now


# --- methods ------------------------------------------------------------------------------------


def ours_autoregressive(lm: LanguageModel, name: str = AR, read_ahead: bool | None = None) -> Method:
    """Our plain decoding loop (`read_ahead`: as `autoregressive` takes it; None: the device's default)."""
    def decode(ids, n):
        records = list(autoregressive(lm.model, ids, n, engine=lm.engine, read_ahead=read_ahead))
        return [t for r in records for t in r.token_ids], records
    return Method(name, decode, compiled=lm.engine.steps is not None, warm_up=lm.engine.warm_up)


def ours_self_speculative(lm: LanguageModel, name: str, draft: DraftModel, settings: DraftSettings) -> Method:
    # What this method's last run measured (DraftModel.carried), kept apart: methods that share a draft
    # (one per draft weights) must not start from one another's costs and evidence.
    memory = None

    def decode(ids, n):
        nonlocal memory
        draft.carried = memory
        try:
            records = list(self_speculative(lm.model, ids, draft, n, settings=settings, engine=lm.engine))
        finally:
            memory = draft.carried
        return [t for r in records for t in r.token_ids], records
    def warm_up(prompt_length, n):
        lm.engine.warm_up(prompt_length, n, settings.widest_step, [draft])
    return Method(name, decode, draft, settings, compiled=lm.engine.steps is not None, warm_up=warm_up)


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
                device: torch.device, warmup_tokens: int = 8, progress: bool = True,
                alongside: Callable[[], object] | None = None) -> dict[str, list[Run]]:
    """Every method on every prompt, `reps` times; the median time per method and prompt is kept.

    Methods run one after another, never at once. They are interleaved (each repetition runs every
    prompt with every method in turn) so that load that drifts on a shared machine falls on all
    methods alike instead of on whichever happened to run during it. Each is warmed up first.
    `alongside`, if given, runs once after each prompt's turn (a measurement that must see the same
    drifting machine as the methods).
    """
    from tqdm.auto import tqdm

    for method in methods:
        if method.compiled:  # every shape the timed runs will meet, longest first (static caches fit it)
            for ids in sorted(prompts, key=len, reverse=True):
                if method.warm_up is not None:  # each step the controller may choose, compiled before use
                    method.warm_up(len(ids), max_new_tokens)
                method.decode(ids, max_new_tokens)
        method.decode(prompts[0], warmup_tokens)
    seconds = {m.name: [[] for _ in prompts] for m in methods}
    outputs: dict[str, list] = {m.name: [None] * len(prompts) for m in methods}
    with tqdm(total=len(methods) * len(prompts) * reps, desc="bench", unit="run", disable=not progress) as bar:
        for _ in range(reps):
            for i, ids in enumerate(prompts):
                for method in methods:
                    t0 = time.perf_counter()
                    outputs[method.name][i] = method.decode(ids, max_new_tokens)
                    synchronize(device)
                    seconds[method.name][i].append(time.perf_counter() - t0)
                    bar.update()
                if alongside is not None:
                    alongside()
    return {name: [Run(tokens, statistics.median(s), records, tuple(s)) for (tokens, records), s in zip(outputs[name], times)]
            for name, times in seconds.items()}


def measure_category_costs(lm: LanguageModel, methods: Sequence[Method], categories: Sequence[str],
                           prompts: Sequence[list[int]], reps: int) -> dict[tuple[str, str], Costs]:
    """c and v per speculative method, on each category's first prompt (context length matters)."""
    first = {c: prompts[categories.index(c)] for c in dict.fromkeys(categories)}
    first["all"] = sorted(prompts, key=len)[len(prompts) // 2]  # the median-length prompt
    return {(m.name, c): measure_costs(lm.model, m.draft, ids, max(m.settings.max_draft, m.settings.context_tokens),
                                       reps, engine=lm.engine)
            for m in methods if m.draft is not None for c, ids in first.items()}


def build_methods(lm: LanguageModel, profile: SkipProfile, settings: Sequence[DraftSettings],
                  vocabs: Sequence[list[int] | None], names: Sequence[str], prompt_lookup: int,
                  early_exit: int) -> list[Method]:
    """Our AR loop first, then the peers asked for; self-speculation once per draft vocabulary, draft
    weights (`settings[i].draft_weights`, None meaning full) and settings.

    With settings of several exit rules, each method's name says its exit.
    """
    several_exits = len({s.exit for s in settings}) > 1
    several_weights = len({s.draft_weights or "full" for s in settings}) > 1
    several_contexts = len({s.context_tokens > 0 for s in settings}) > 1
    methods = [ours_autoregressive(lm)]
    if "generate" in names:
        methods.append(transformers_generate(lm, "transformers generate"))
    if "generate-static" in names:
        methods.append(transformers_generate_static_compiled(lm))
    if "self-speculative" in names:
        calibration = calibration_ids(lm.encode) if any(s.draft_weights == "auto" for s in settings) else ()
        for vocab in vocabs:
            head = None if vocab is None else VocabularyHead(lm.model, vocab)
            for weights in dict.fromkeys(s.draft_weights or "full" for s in settings):
                draft, choice = build_draft(lm.model, profile, weights, calibration=calibration, key=lm.name,
                                            max_draft=max(s.max_draft for s in settings), head=head)
                named = several_weights or weights != "full"
                for s in [s for s in settings if (s.draft_weights or "full") == weights]:
                    label = (f"self-spec K={s.max_draft}" + ("" if vocab is None else f" V={len(vocab)}")
                             + (f" {weights}" if named else "") + (f"={choice.weights}" if choice else "")
                             + (f" {s.exit}" if several_exits else "")
                             + ((" +context" if s.context_tokens else " no-context") if several_contexts else ""))
                    methods.append(ours_self_speculative(lm, label, draft, s))
    if "prompt-lookup" in names:
        methods.append(transformers_generate(lm, f"prompt lookup n={prompt_lookup}",
                                             prompt_lookup_num_tokens=prompt_lookup))
    if "early-exit" in names:
        methods.append(transformers_generate(lm, f"early exit E={early_exit}", assistant_early_exit=early_exit))
    return methods


def bench(lm: LanguageModel, prompts: Sequence[BenchPrompt], methods: Sequence[Method], max_new_tokens: int,
          reps: int, progress: bool = True) -> tuple[list[Row], dict]:
    ids = [lm.encode_chat(p.messages) for p in prompts]
    categories = [p.category for p in prompts]
    # The floor, with the products the engine chose, is sampled between the runs: this host's speed drifts
    # by a third over minutes, so a floor timed once, at one moment, says little of the runs' moments.
    floors = []
    runs = run_methods(methods, ids, max_new_tokens, reps, lm.device, progress=progress,
                       alongside=lambda: floors.append(measure_floor(lm.engine.tuned, reps=1)))
    costs = measure_category_costs(lm, methods, categories, ids, reps=max(reps, 5))
    rows = summarize_runs(methods, categories, runs, costs)
    floor = median_floor(floors)
    detail = {"engine": lm.engine.describe(), "floor": floor.to_dict(),
              "overhead": step_overhead(runs, costs, floor),
              "costs": {f"{m} | {c}": cost.to_dict() for (m, c), cost in costs.items()},
              "outputs": {m: [{"category": cat, "prompt_tokens": len(i), "tokens": r.tokens, "seconds": r.seconds}
                              for cat, i, r in zip(categories, ids, rs)] for m, rs in runs.items()}}
    return rows, detail


def step_overhead(runs: dict[str, list[Run]], costs: dict[tuple[str, str], Costs], floor: Floor) -> dict:
    """Our autoregressive ms/token against the floor of the same run, and c, v of each speculative method."""
    ar = decode_metrics(r.records for r in runs[AR]).seconds_per_token
    out = {"ar_ms_per_token": ar * 1e3 if ar else None, "floor_ms": floor.seconds * 1e3,
           "ar_over_floor": ar / floor.seconds if ar else None}
    out["methods"] = {m: {"c": cost.c, "v": cost.v} for (m, c), cost in costs.items() if c == "all"}
    return out
