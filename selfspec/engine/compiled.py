"""The three steps compiled: one full token, one draft token, one verification per width bucket.

Compiling (torch.compile; on CUDA each compiled step is then captured as a CUDA graph by hand,
captured.py) happens on first use of each step and prints one line; inductor's artefacts are kept under ~/.cache/selfspec/inductor, so a
later process reuses them. It needs the static cache (tensors that keep their addresses). Where it is
not possible — no compiler, or a host that forbids it, such as a Hugging Face ZeroGPU Space — or where
it fails, the eager step runs instead, after a one-line notice, never a crash.

Switched by `--compile/--no-compile`, else the SELFSPEC_COMPILE environment variable (1/0), else on
for CUDA and off for CPU (on a 2-core CPU the first compile takes minutes, then steps run nearer their
product floor: docs/BENCHMARKS.md).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from selfspec.engine.captured import CapturedGraphs
from selfspec.engine.host import cache_root, compile_allowed
from selfspec.engine.row_products import ROW_BUCKETS

# Verification widths are padded up to these, so each needs one graph (the padded rows' logits are
# dropped, and the K/V they write lies past the committed length: masked, then overwritten).
WIDTH_BUCKETS = tuple(high for _, high in ROW_BUCKETS)
# Graphs one step may keep: every width bucket for each cache size a long-lived process meets (sizes step
# by 256 positions). Past torch's default of 8, a new shape would silently run eager.
RECOMPILE_LIMIT = 64


def compile_setting(flag: bool | None, device: torch.device) -> bool:
    """Whether to compile: the explicit flag, else SELFSPEC_COMPILE, else on for CUDA only."""
    if flag is not None:
        return flag
    env = os.environ.get("SELFSPEC_COMPILE", "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    return device.type == "cuda"


def padded_width(width: int) -> int | None:
    """The bucket a verification of `width` positions is padded to (None: wider than every bucket)."""
    return next((w for w in WIDTH_BUCKETS if width <= w), None)


def inductor_cache_dir() -> Path:
    return cache_root() / "inductor"


def use_inductor_cache_dir() -> str:
    """Point inductor at our cache directory, unless the user chose one; returns where it caches.

    Inductor writes its default (a folder under /tmp) into TORCHINDUCTOR_CACHE_DIR the first time anything
    asks (loading a model already does), so a default is told from a choice by its value, not its presence."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, os.path.abspath(default_cache_dir())):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_cache_dir())
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


class CompiledSteps:
    """Compiled callables for one model; each falls back to eager for good after a failure."""

    def __init__(self, forward: Callable, mode: str | None, backend: str | object = "inductor",
                 capture: bool = False):
        # What the steps run: the engine's forward (its walk, or transformers' forward) over the model or its
        # shadow with this machine's products, (tokens, positions, cache) -> logits (1, q, V).
        self.forward = forward
        self.mode = mode
        self.graphs = CapturedGraphs() if capture else None
        # torch.compile's own CUDA graphs reuse their outputs at the next replay.
        self.replays_graphs = mode in ("reduce-overhead", "max-autotune") or backend == "cudagraphs"
        self.failed: str | None = None
        self.compile_seconds: dict[str, float] = {}
        self.compilations = 0  # calls that compiled or captured a graph (a first use, a new shape, a new cache)
        self._announced = False
        # Separate functions, so each step has its own graphs and recompile budget.
        options = dict(dynamic=False, backend=backend, **({"mode": mode} if mode else {}))
        self._full = torch.compile(self._full_logits, **options)
        self._verify = torch.compile(self._verify_logits, **options)
        self._draft = torch.compile(self._draft_logits, **options)

    def use_forward(self, forward: Callable) -> None:
        """Run the steps through `forward` from now on (graphs captured through the old one are dropped)."""
        self.forward = forward
        if self.graphs is not None:
            self.graphs = CapturedGraphs()

    @staticmethod
    def for_model(forward: Callable, device: torch.device, enabled: bool, static_cache: bool,
                  backend: str | object = "inductor", mode: str | None = None) -> "CompiledSteps | None":
        if not enabled:
            return None
        reason = compile_allowed(device) or (None if static_cache else "it needs the static cache")
        if reason is not None:
            print(f"selfspec: running eager ({reason})", file=sys.stderr)
            return None
        use_inductor_cache_dir()
        # On CUDA, inductor's steps are captured as CUDA graphs by hand (captured.py), unless a mode asks for
        # torch.compile's own (reduce-overhead, max-autotune); the cudagraphs backend is CUDA graphs alone.
        capture = device.type == "cuda" and backend == "inductor" and mode in (None, "max-autotune-no-cudagraphs")
        return CompiledSteps(forward, mode, backend, capture)

    # --- the steps, as the compiler sees them ---

    def _full_logits(self, tokens, positions, cache):
        return self.forward(tokens, positions, cache)[0]

    def _verify_logits(self, tokens, positions, cache):
        return self.forward(tokens, positions, cache)[0]

    def _draft_logits(self, draft, token, positions, cache):
        return draft(token, positions, cache)[0, -1]

    # --- what the engine calls ---

    def full(self, tokens, positions, cache):
        return self._run("one token", self._full, self._full_logits, (tokens, positions), cache)

    def draft(self, draft, token, positions, cache):
        return self._run("draft token", self._draft, self._draft_logits, (token, positions), cache, draft)

    def verify(self, tokens, positions, cache):
        width = tokens.shape[-1]
        padded = padded_width(width)
        if padded is None or self.failed:
            return self._verify_logits(tokens, positions, cache)
        if padded > width:  # repeat the last token; its rows are dropped
            tokens = torch.cat([tokens, tokens[:, -1:].expand(1, padded - width)], dim=1)
            positions = torch.arange(padded, device=positions.device)[None] + positions[:, :1]
        logits = self._run(f"verify {padded}", self._verify, self._verify_logits, (tokens, positions), cache)
        return logits[:width]

    def _run(self, name, compiled, eager, inputs, cache, draft=None):
        """One step: `inputs` (tokens, positions) change from call to call; the cache and the draft are held."""
        def step(fn):
            return lambda *x: fn(*x, cache) if draft is None else fn(draft, *x, cache)

        if self.failed:
            return step(eager)(*inputs)
        first = name not in self.compile_seconds
        if first and not self._announced:
            print(f"selfspec: compiling the model's steps on first use (cached in {use_inductor_cache_dir()})",
                  file=sys.stderr)
            self._announced = True
        def restore():  # the cache as before this step (read only when needed: it waits for the device)
            cache.rollback(int(inputs[1][0, 0]))

        t0, graphs, captured = time.perf_counter(), _graphs_compiled(), False
        try:
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):  # for this call only
                if self.graphs is not None:
                    key = (name, id(cache), id(draft))
                    holds = [cache] + ([draft] if draft is not None else [])
                    out, captured = self.graphs.run(key, holds, step(compiled), inputs, restore)
                else:
                    out = step(compiled)(_as_graph_input(inputs[0]), inputs[1])
        except Exception as exc:  # a compiler that is missing or fails: eager from now on
            self.failed = _one_line(exc)
            print(f"selfspec: compiling failed, running eager ({self.failed})", file=sys.stderr)
            restore()  # a step that ran part way wrote nothing we keep
            return step(eager)(*inputs)
        if first:
            self.compile_seconds[name] = round(time.perf_counter() - t0, 2)
        if captured or _graphs_compiled() != graphs:
            self.compilations += 1
        return out.clone() if self.replays_graphs else out  # torch.compile's CUDA graphs reuse their outputs

    def describe(self) -> dict:
        return {"mode": self.mode or "default", "cuda_graphs": self._cuda_graphs(), "failed": self.failed,
                "compile_seconds": dict(self.compile_seconds)}

    def _cuda_graphs(self) -> str:
        if self.graphs is not None:
            return "captured by hand"
        return "torch.compile's" if self.replays_graphs else "none"


def _graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process so far (its own statistics, read only)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _as_graph_input(tokens: torch.Tensor) -> torch.Tensor:
    """A contiguous inference-mode copy (the engine calls under inference mode): the graphs guard on
    strides and on whether a tensor is an inference tensor, so a caller's slice or a tensor made
    outside inference mode would otherwise compile the same step again."""
    return tokens.clone(memory_format=torch.contiguous_format)


def _one_line(exc: BaseException) -> str:
    """The root cause of a compiler error, in one short line."""
    while (inner := exc.__cause__ or getattr(exc, "inner_exception", None)) is not None:
        exc = inner
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:200]
