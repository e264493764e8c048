"""How one model's forward passes run on this machine: its cache, its few-row products, its compiled steps.

An `Engine` is made once per model (it measures at creation) and serves every request after that,
for both decoders, so that the autoregressive baseline runs exactly as fast as the engine allows:
  - the KV cache: a static one sized for the request (static_cache.py), or the dynamic fallback;
  - the products of its few-row forwards (a decoding step, a verification), chosen per machine by timing
    (row_products.py);
  - the three steps (one full token, one draft token, one verification) compiled or eager (compiled.py);
    eager, the full model's forwards walk its layers in a plain loop (walk.py) instead of transformers'
    forward, with the same logits.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from selfspec.engine.architectures import hooked, num_layers
from selfspec.engine.cache import new_cache
from selfspec.engine.attention_forms import ROWS_FORM
from selfspec.engine.compiled import CompiledSteps, compile_setting, padded_width
from selfspec.engine.row_products import RowProducts, choose_row_products
from selfspec.engine.walk import LayerWalk

STATIC_ATTENTION = ("sdpa", "eager")  # implementations that take our position-built masks
CAPACITY_STEP = 256  # compiled steps: cache sizes are multiples of this
FREE_CACHES = 4  # finished requests' caches kept for the next ones (the oldest goes first)


def transformers_forward(model: nn.Module):
    """`model`'s own forward as the engine calls one: (tokens, positions, cache, last_only) -> logits (1, q, V)."""
    def forward(tokens: torch.Tensor, positions: torch.Tensor, cache, last_only: bool = False, **_) -> torch.Tensor:
        return model(input_ids=tokens, position_ids=positions, cache=cache, use_cache=True,
                     logits_to_keep=1 if last_only else 0).logits
    return forward


@torch.inference_mode()
def forward_full(model: nn.Module, tokens: torch.Tensor, start: int, cache, last_only: bool = False) -> torch.Tensor:
    """Full-model logits (q, V) for `tokens` (1, q) placed at positions start..start+q-1."""
    positions = torch.arange(start, start + tokens.shape[-1], device=tokens.device)[None]
    return transformers_forward(model)(tokens, positions, cache, last_only)[0]


class Engine:
    def __init__(self, model: nn.Module, *, static_cache: bool = True, compile: bool | None = False,
                 choose_kernels: bool = True, compile_backend: str | object = "inductor",
                 compile_mode: str | None = None):
        """`compile`: True/False, or None for SELFSPEC_COMPILE / the device's default (compiled.py);
        `compile_mode`: torch.compile's mode for the inductor backend (None: the device's default)."""
        self.model = model
        attention = getattr(model.config, "_attn_implementation", "sdpa") or "sdpa"
        self.static_cache = static_cache and attention in STATIC_ATTENTION
        # The walk calls no decoder layer as a module: it serves models none of whose modules carry hooks
        # (accelerate's device maps move tensors between devices in them), and attention that takes our
        # position-built masks (flash-style kernels take transformers' own).
        self._walks = attention in STATIC_ATTENTION and not any(hooked(m) for m in model.modules())
        self._free_caches: list = []  # caches of finished requests, oldest first
        self._free_lock = threading.Lock()
        self._choose_kernels = choose_kernels  # False: transformers' own products, attention and norms
        self.use_products(choose_row_products(model) if choose_kernels else RowProducts.plain())
        self.steps = CompiledSteps.for_model(self.forward, self.device, compile_setting(compile, self.device),
                                             self.static_cache, compile_backend, compile_mode)

    def use_products(self, products: RowProducts) -> None:
        """Run full-model forwards with these products: the model itself, or a shadow of it with the chosen
        layers swapped (the model is never changed)."""
        self.products = products
        self.tuned = products.tuned(self.model)
        head = self.tuned.get_output_embeddings()
        self.walk = (LayerWalk(self.tuned, self.model.config, head, choose_forms=self._choose_kernels)
                     if self._walks else None)
        self.forward = self.walk or transformers_forward(self.tuned)  # (tokens, positions, cache, ...) -> logits
        if getattr(self, "steps", None) is not None:
            self.steps.use_forward(self.forward)

    @property
    def compilations(self) -> int:
        """Steps so far that compiled a graph: the time of such a step is the compiler's, not the step's."""
        return self.steps.compilations if self.steps is not None else 0

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def new_cache(self, prompt_length: int, new_tokens: int, max_width: int = 1):
        """A cache for one request: the prompt, `new_tokens` more, and forwards of up to `max_width` positions."""
        capacity = self._capacity(prompt_length, new_tokens, max_width)
        return new_cache() if capacity is None else new_cache(num_layers(self.model), capacity)

    def _capacity(self, prompt_length: int, new_tokens: int, max_width: int) -> int | None:
        """Positions of a request's static cache (None: the dynamic cache)."""
        if not self.static_cache:
            return None
        if self.steps is None:
            return prompt_length + new_tokens + max_width + 1
        # Compiled graphs are specialised to the cache's shape: round it up so requests share them.
        capacity = prompt_length + new_tokens + max(max_width, padded_width(max_width) or 0) + 1
        return -(-capacity // CAPACITY_STEP) * CAPACITY_STEP

    @contextmanager
    def request_cache(self, prompt_length: int, new_tokens: int, max_width: int = 1) -> Iterator:
        """`new_cache` for one request, reusing a finished request's static cache of the same size where
        there is one (emptied: its stale entries lie past the length, masked, then overwritten), so that
        the CUDA graphs captured for it stay valid (captured.py). Concurrent requests get caches of their own."""
        capacity = self._capacity(prompt_length, new_tokens, max_width)
        with self._free_lock:
            same = [c for c in self._free_caches if c.capacity == capacity]
            if same:
                self._free_caches.remove(same[-1])
        cache = same[-1] if same else self.new_cache(prompt_length, new_tokens, max_width)
        try:
            yield cache
        finally:
            if capacity is not None:
                cache.rollback(0)
                with self._free_lock:
                    self._free_caches = (self._free_caches + [cache])[-FREE_CACHES:]

    @torch.inference_mode()
    def warm_up(self, prompt_length: int, new_tokens: int, max_width: int = 1, drafts: Sequence = ()) -> None:
        """Compile now every step a request of this size may run (compiled engines only; eager ones have
        nothing to do), so that none compiles in the middle of a timed or streamed request: the one-token
        step, each draft's step, and each verification bucket up to `max_width` positions."""
        if self.steps is None:
            return
        # The request's cache: its captured graphs stay for the next request.
        with self.request_cache(prompt_length, new_tokens, max_width) as cache:
            token = torch.zeros(1, 1, dtype=torch.long, device=self.device)
            self._forward(token, 0, cache)  # the prefill (eager), as a request starts: the steps see a filled cache
            self.full(token, 1, cache)
            for draft in drafts:
                cache.rollback(1)
                self.draft(draft, token, 1, cache)
            for width in sorted({padded_width(w) for w in range(2, max_width + 1)} - {None}):
                cache.rollback(1)
                self.verify(token.expand(1, width), 1, cache)

    @torch.inference_mode()
    def full(self, tokens: torch.Tensor, start: int, cache, last_only: bool = False) -> torch.Tensor:
        """Full-model logits (q, V) for `tokens` (1, q) at positions start..; one token may run compiled."""
        if tokens.shape[-1] == 1 and self.steps is not None:
            return self.steps.full(tokens, self._positions(start, 1), cache)
        return self._forward(tokens, start, cache, last_only)

    @torch.inference_mode()
    def verify(self, tokens: torch.Tensor, start: int, cache) -> torch.Tensor:
        """Full-model logits over the few positions of a verification, with the products chosen here."""
        if self.steps is not None:
            return self.steps.verify(tokens, self._positions(start, tokens.shape[-1]), cache)
        return self._forward(tokens, start, cache)

    @torch.inference_mode()
    def draft(self, draft, token: torch.Tensor, position: int, cache) -> torch.Tensor:
        """Draft logits (V',) for one token at `position`."""
        if self.steps is None:
            logits = draft.walk.token_logits(token, position, cache)
            if logits is not None:
                return logits
        positions = self._positions(position, 1)
        if self.steps is not None:
            return self.steps.draft(draft, token, positions, cache)
        return draft(token, positions, cache)[0, -1]

    def _forward(self, tokens: torch.Tensor, start: int, cache, last_only: bool = False) -> torch.Tensor:
        positions = self._positions(start, tokens.shape[-1])
        return self.forward(tokens, positions, cache, last_only, from_start=start == 0)[0]

    def _positions(self, start: int, width: int) -> torch.Tensor:
        return torch.arange(start, start + width, device=self.device)[None]

    def describe(self) -> dict:
        """What this engine runs, for --json reports and bench output."""
        return {"cache": "static" if self.static_cache else "dynamic",
                "compiled": self.steps.describe() if self.steps is not None else "off",
                "products": self.products.to_dict() | {"extra_bytes": self.products.extra_bytes(self.model)},
                "forms": self.walk.forms if self.walk is not None else {},
                "layer_loop": self.walk.layer_loop if self.walk is not None else "transformers",
                "exact_verifications": self.exact_verifications()}

    def exact_verifications(self) -> bool | None:
        """Whether a verification's rows are, bit for bit, the one-token steps they stand for, where that was
        checked (16-bit dtypes on a CPU: attention_forms.exact_rows_required): every product exact by rows, and both
        attention kinds in "rows" (attention_forms.py). None where it was not checked (float32, a GPU)."""
        exact = self.products.rows_exact
        if exact is None:
            return None
        forms = self.walk.forms if self.walk is not None else {}
        return exact and forms.get("one query") == forms.get("masked queries") == ROWS_FORM and self.steps is None
