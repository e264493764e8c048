"""How a step's few queries meet grouped keys and values: equivalent attention forms, chosen per machine.

In a model with grouped-query attention (fewer key/value heads than query heads) sdpa can be handed a
step's queries in several forms that compute the same sums. At batch 1 on a CPU their costs differ by
several times, and not the same way on every CPU or in every dtype (docs/BENCHMARKS.md), so each is
timed once per machine, dtype and shape (kernels.choose_fastest, cached) rather than assumed:
  - one query (a decoding step, a draft token), over the keys it reads without a mask: "grouped",
    sdpa's `enable_gqa` (transformers' own path), or "packed", each key/value head's query heads as the
    rows of one query block (transformers' `pack_gqa`);
  - several masked queries (a verification): "repeated", transformers' path, which first copies the keys
    and values once per query head (`repeat_kv`), or "grouped", sdpa's `enable_gqa`.
"grouped" gives transformers' values bit for bit (tests/test_walk.py); "packed" differs from them by a
few float32 ulps (the same values in bfloat16 as far as measured), so only engines that choose their
kernels use it. CUDA keeps transformers' paths.

Both kinds have a third form where the engine's C++ extension runs: "rows", each row over the positions up to
its own, one row at a time (csrc/rows_attention.cpp). sdpa groups a row's sums by how many queries and keys the
call holds, so a verification's row and the one-token step at its position can round differently; in bfloat16
often enough to change a greedy token. In "rows" a row's values are the same in any forward, so in 16-bit
dtypes, whose products over a few rows give each row what they give it alone, a verification commits exactly
the tokens that steps one by one would: there both kinds take "rows" untimed. In float32, whose products differ
by ulps with the rows anyway, it is one more timed candidate.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from selfspec.engine.devices import dtype_name
from selfspec.engine.kernels import choose_fastest
from selfspec.engine.native_build import native_extension

ONE_QUERY_FORMS = ("grouped", "packed")
MASKED_QUERIES_FORMS = ("repeated", "grouped")
ROWS_FORM = "rows"  # either kind's third form, where `rows_attention` gives one
EXACT_ROWS_LIMIT = 64  # the most rows attended as "rows" (a step, a verification, a read of copies); a prompt keeps sdpa
# The masked attention timed: a verification of K = 8 drafts, the controller's usual length. At 5 queries "rows" timed
# faster than sdpa, at 9 and more slower (docs/BENCHMARKS.md, "16-bit verifications exact by rows").
VERIFY_QUERIES = 9
TIMED_KEYS = 128  # keys the forms are timed over: a prompt and its answer so far


def attend(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask, scale: float,
           packed: bool) -> torch.Tensor:
    """Attention (1, heads, q, d) of `query` (1, heads, q, d) over grouped `keys`/`values` (1, groups, kv,
    d); `packed` (one query) puts each group's heads as the rows of one query block (a mask over the keys
    alone, (1, 1, 1, kv), applies to every row)."""
    heads, groups = query.shape[1], keys.shape[1]
    if not packed or groups == heads:
        return F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=scale,
                                              enable_gqa=groups != heads)
    rows = query.reshape(1, groups, heads // groups, query.shape[-1])
    out = F.scaled_dot_product_attention(rows, keys, values, attn_mask=mask, scale=scale)
    return out.reshape(1, heads, 1, query.shape[-1])


def rows_attention(attn: nn.Module, device: torch.device, windowless: bool) -> Callable | None:
    """The extension's attention of rows (query (1, heads, q, d), keys, values (1, groups, n, d), position of the
    first query, scaling) -> (1, heads, q, d), where it runs for this model: on a CPU with AVX2, in `windowless`
    layers (it attends to every earlier position), heads a multiple of 8 up to 512 wide; else None."""
    if device.type != "cpu" or not windowless or attn.head_dim % 8 or attn.head_dim > 512:
        return None
    extension = native_extension()
    if extension is None or not extension.rows_attention_available():
        return None
    return extension.attend_cached_rows


def exact_rows_required(dtype: torch.dtype) -> bool:
    """Whether "rows" is taken untimed, for both kinds: in 16-bit dtypes, where it makes verifications exact."""
    return dtype in (torch.bfloat16, torch.float16)


def _rows_candidate(rows: Callable, query: torch.Tensor, keys_values: torch.Tensor) -> Callable:
    position = keys_values.shape[2] - query.shape[2]
    return lambda: rows(query, keys_values, keys_values, position, 1.0)


def _shapes(attn: nn.Module) -> tuple[int, int, int]:
    return attn.config.num_attention_heads, attn.config.num_key_value_heads, attn.head_dim


def one_query_form(attn: nn.Module, dtype: torch.dtype, device: torch.device, keys: int = TIMED_KEYS,
                   rows: Callable | None = None) -> str:
    """The faster of ONE_QUERY_FORMS (and "rows", given `rows_attention`) for one query over `keys` keys on this
    machine (timed once, cached)."""
    heads, groups, head_dim = _shapes(attn)
    if device.type != "cpu" or (heads == groups and rows is None):
        return "grouped"  # nothing to pack, or a GPU: transformers' path
    query = torch.randn(1, heads, 1, head_dim, dtype=dtype, device=device)
    keys_values = torch.randn(1, groups, keys, head_dim, dtype=dtype, device=device)
    candidates = {form: (lambda p=form == "packed": attend(query, keys_values, keys_values, None, 1.0, p))
                  for form in ONE_QUERY_FORMS}
    if rows is not None:
        candidates[ROWS_FORM] = _rows_candidate(rows, query, keys_values)
    key = (f"one-query-prefix-attention:{dtype_name(dtype)}:{heads}x{groups}x{head_dim}x{keys}"
           + (":rows" if rows is not None else ""))
    with torch.inference_mode():
        return choose_fastest(key, candidates, device, repeats=5, rounds=2, incumbent="grouped").name


def masked_queries_form(attn: nn.Module, attention: Callable, dtype: torch.dtype, device: torch.device,
                        keys: int = TIMED_KEYS, rows: Callable | None = None) -> str:
    """The faster of MASKED_QUERIES_FORMS (and "rows", given `rows_attention`) for a verification's queries on this
    machine (timed once, cached); `attention` is transformers' attention function for the model's implementation."""
    heads, groups, head_dim = _shapes(attn)
    if device.type != "cpu" or (heads == groups and rows is None):
        return "repeated"
    query = torch.randn(1, heads, VERIFY_QUERIES, head_dim, dtype=dtype, device=device)
    keys_values = torch.randn(1, groups, keys, head_dim, dtype=dtype, device=device)
    mask = (torch.arange(keys, device=device)[None] <= torch.arange(keys - VERIFY_QUERIES, keys, device=device)[:, None])
    candidates = {form: (lambda f=with_forms(attention, form, "grouped"):
                         f(attn, query, keys_values, keys_values, mask[None, None], scaling=attn.scaling))
                  for form in MASKED_QUERIES_FORMS}
    if rows is not None:
        candidates[ROWS_FORM] = _rows_candidate(rows, query, keys_values)
    key = (f"masked-queries-attention:{dtype_name(dtype)}:{heads}x{groups}x{head_dim}x{VERIFY_QUERIES}x{keys}"
           + (":rows" if rows is not None else ""))
    with torch.inference_mode():
        return choose_fastest(key, candidates, device, repeats=5, rounds=2, incumbent="repeated").name


def with_forms(attention: Callable, masked_queries: str, one_query: str, direct_one_query: bool = False,
               rows: Callable | None = None) -> Callable:
    """transformers' sdpa `attention` function, except that grouped keys and values meet several masked
    queries (a verification) and one unmasked query (a step over the keys it reads) in the given forms;
    transformers' path takes `enable_gqa` only without a mask, which CUDA kernels need. `direct_one_query`:
    make transformers' own one-query call ("grouped") directly, without the checks it makes at every call
    (several microseconds a layer on a CPU; the same call, so the same values). `rows`: `rows_attention`, for
    the kinds whose form is "rows"; the last of the keys given are the queries' own (the walk's eager steps on a
    CPU hand over exactly the keys up to the last query), and not while compiling (a graph takes no extension)."""
    if masked_queries == "repeated" and one_query == "grouped" and not direct_one_query:
        return attention
    in_rows = (one_query == ROWS_FORM, masked_queries == ROWS_FORM)
    if any(in_rows) and rows is None:
        raise ValueError("the \"rows\" attention form needs rows_attention")

    def chosen(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        width = query.shape[2]
        if (in_rows[width > 1] and width <= EXACT_ROWS_LIMIT and not kwargs and not dropout
                and (attention_mask is None or attention_mask.dtype == torch.bool)
                and not torch.compiler.is_compiling()):
            out = rows(query, key, value, key.shape[2] - width, module.scaling if scaling is None else scaling)
            return out.transpose(1, 2).contiguous(), None
        if module.num_key_value_groups == 1 or kwargs or dropout:
            return attention(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        if query.shape[2] == 1 and attention_mask is None and (
                one_query == "packed" or (direct_one_query and key.shape[-1] == value.shape[-1] <= 256)):
            # (transformers' condition for `enable_gqa`; past it, it packs the query itself)
            out = attend(query, key, value, None, scaling, packed=one_query == "packed")
        elif (query.shape[2] > 1 and masked_queries == "grouped" and attention_mask is not None
              and attention_mask.dtype == torch.bool):
            out = attend(query, key, value, attention_mask, scaling, packed=False)
        else:
            return attention(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling)
        return out.transpose(1, 2).contiguous(), None
    return chosen
