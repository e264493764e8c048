"""Differing greedy outputs are explained: the first differing position and the full model's top-2 gap there."""

import pytest
import torch

from selfspec.engine.decoding import autoregressive, self_speculative
from selfspec.engine.settings import DraftSettings
from selfspec.engine.divergence import Divergence, explain_difference, first_difference
from selfspec.profiles.schema import SkipProfile
from tiny_models import tiny_model

PROMPT = [3, 17, 42, 8, 25]


@pytest.mark.parametrize("a, b, expected", [
    ([1, 2, 3], [1, 2, 3], None),
    ([1, 2, 3], [1, 5, 3], 1),
    ([1, 2, 3], [1, 2], 2),  # one output ended early
    ([], [4], 0),
])
def test_first_difference(a, b, expected):
    assert first_difference(a, b) == expected


def test_the_gap_is_the_full_models_own_at_the_first_difference():
    model = tiny_model("llama")
    ids = torch.tensor([PROMPT])
    # Independently of the code under test: generate() with its own cache keeps every step's scores.
    out = model.generate(ids, max_new_tokens=8, do_sample=False, output_scores=True, return_dict_in_generate=True,
                         eos_token_id=None, pad_token_id=0)
    reference = out.sequences[0, len(PROMPT):].tolist()
    other = reference[:5] + [(reference[5] + 1) % 96] + reference[6:]
    divergence = explain_difference(model, PROMPT, reference, other)
    scores = out.scores[5][0].float()
    top = scores.topk(2)
    assert divergence.position == 5 and divergence.tokens == (reference[5], other[5])
    assert divergence.top2 == tuple(top.indices.tolist()) and divergence.top2[0] == reference[5]
    assert divergence.margin == pytest.approx(float(top.values[0] - top.values[1]), rel=1e-4, abs=1e-4)
    # A random model's sharpened logits are far apart: not a rounding flip in float32.
    assert not divergence.near_tie and "wider than rounding explains" in divergence.describe()
    assert explain_difference(model, PROMPT, reference, list(reference)) is None


def test_a_near_tie_is_described_as_rounding():
    text = Divergence(36, (5, 9), (5, 9), 0.0625, "bfloat16", near_tie=True).describe()
    assert text.startswith("outputs differ from generated token 37 on")
    assert "0.0625 apart in bfloat16" in text and "near-tie" in text


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2"])
def test_float32_stays_token_identical(arch):
    model = tiny_model(arch)
    profile = SkipProfile(4, attn=[1, 2], mlp=[3])
    ar = [t for r in autoregressive(model, PROMPT, 40) for t in r.token_ids]
    spec = [t for r in self_speculative(model, PROMPT, profile, 40, settings=DraftSettings(max_draft=4))
            for t in r.token_ids]
    assert ar == spec and explain_difference(model, PROMPT, ar, spec) is None


def test_where_bfloat16_outputs_differ_the_full_model_was_at_a_near_tie():
    """Real bf16 divergences: our cached decoding against generate() recomputing the whole context each step.

    Two arithmetic paths of the same model (flat logits, as in a trained model's free text): where their
    greedy outputs part, the explanation must find a rounding flip between the full model's top two.
    """
    divergences = []
    for seed in (0, 1, 2):
        model = tiny_model("llama", seed=seed)
        with torch.no_grad():  # undo tiny_model's sharpening: near-ties become common
            model.get_output_embeddings().weight.mul_(1 / 8)
        model = model.to(torch.bfloat16)
        for start in (9, 16, 23):
            prompt = list(range(start, start + 18, 3))
            ours = [t for r in autoregressive(model, prompt, 48) for t in r.token_ids]
            recomputed = model.generate(torch.tensor([prompt]), max_new_tokens=48, do_sample=False, use_cache=False,
                                        eos_token_id=1, pad_token_id=0)[0, len(prompt):].tolist()
            divergence = explain_difference(model, prompt, ours, recomputed)
            if divergence is not None:
                divergences.append(divergence)
    if not divergences:
        pytest.skip("this CPU's bf16 kernels rounded both paths alike in every case")
    for d in divergences:
        assert d.near_tie and set(d.tokens) == set(d.top2), d
        assert "near-tie" in d.describe()
