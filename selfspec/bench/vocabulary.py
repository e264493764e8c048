"""Choosing, storing and loading the draft head's restricted vocabulary.

The draft only has to propose tokens the full model is likely to pick, so its output head can score
a few thousand rows of the output matrix instead of all of them (on SmolLM2 the full head is ~18% of a
token's time). Which rows, deterministically:
  1. the model's own greedy continuations of calibration prompts (`bench_prompts.CALIBRATION`, never
     the benchmark prompts), counted together with the prompts' tokens and the model's teacher-forced
     argmax predictions over both: tokens ranked by count, ties by id;
  2. the end-of-sequence ids, always;
  3. then, to fill up to `size`, the lowest ids not yet chosen: byte-pair tokenizers number merges in
     the order they were learned, which is by frequency in the tokenizer's training text.
Stored as JSON: {"model", "size", "source", "token_ids": [...]} (plain data, sorted ids).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Sequence

import torch

from selfspec.bench.prompts import CALIBRATION
from selfspec.engine.decoding import autoregressive, eos_token_ids
from selfspec.models.loading import LanguageModel


def vocabulary_size(lm: LanguageModel) -> int:
    return int(lm.model.get_output_embeddings().weight.shape[0])


@torch.inference_mode()
def calibration_counts(lm: LanguageModel, texts: Sequence[str] = CALIBRATION, new_tokens: int = 32) -> Counter:
    """Token counts over calibration prompts, the model's continuations and its argmax predictions."""
    counts: Counter = Counter()
    for text in texts:
        prompt = lm.encode(text)
        continuation = [t for r in autoregressive(lm.model, prompt, new_tokens) for t in r.token_ids]
        ids = prompt + continuation
        logits = lm.model(input_ids=torch.tensor([ids], device=lm.device)).logits[0]
        counts.update(ids)
        counts.update(logits.argmax(-1).tolist())
    return counts


def choose_vocabulary(lm: LanguageModel, size: int, counts: Counter | None = None) -> list[int]:
    """`size` token ids for the draft head, chosen as the module docstring says (sorted)."""
    total = vocabulary_size(lm)
    if not isinstance(size, int) or not 1 <= size <= total:
        raise ValueError(f"draft vocabulary size must be in 1..{total}, got {size!r}")
    counts = calibration_counts(lm) if counts is None else counts
    eos = sorted(t for t in eos_token_ids(lm.model) if t < total)
    ranked = eos + sorted((t for t in counts if t < total), key=lambda t: (-counts[t], t))
    chosen = list(dict.fromkeys(ranked))[:size]
    taken = set(chosen)
    filler = (t for t in range(total) if t not in taken)
    while len(chosen) < size:
        chosen.append(next(filler))
    return sorted(chosen)


def write_vocabulary(path: str | Path, token_ids: Sequence[int], model: str, source: str) -> None:
    data = {"model": model, "size": len(token_ids), "source": source, "token_ids": sorted(int(t) for t in token_ids)}
    Path(path).write_text(json.dumps(data) + "\n", encoding="utf-8")


def read_vocabulary(path: str | Path) -> list[int]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        ids = data["token_ids"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a draft vocabulary file ({exc})") from None
    if not isinstance(ids, list) or not ids or not all(isinstance(t, int) and t >= 0 for t in ids):
        raise ValueError(f"{path}: token_ids must be a non-empty list of non-negative integers")
    return ids
