import random

import pytest

from selfspec.engine.context import ContextIndex


def brute_force(tokens, max_ngram, min_ngram, max_tokens):
    """The definition, by scanning: latest earlier occurrence of the longest matching suffix."""
    for n in range(min(max_ngram, len(tokens)), min_ngram - 1, -1):
        suffix = tokens[-n:]
        for start in range(len(tokens) - n - 1, -1, -1):  # an occurrence that has a follower
            if tokens[start:start + n] == suffix:
                return tokens[start + n:start + n + max_tokens]
    return []


def test_copies_what_followed_the_latest_occurrence():
    index = ContextIndex([5, 6, 7, 8, 1, 5, 6, 9, 2, 5, 6], max_ngram=2)
    assert index.propose(3) == [9, 2, 5]  # "5 6" last occurred before "9 2 5", not before "7 8"
    index.extend([9])
    assert index.propose(2) == [2, 5]
    assert index.propose(0) == []


def test_falls_back_to_shorter_ngrams_and_to_nothing():
    index = ContextIndex([1, 2, 3, 4, 3], max_ngram=3)
    assert index.propose(2) == [4, 3]  # only the 1-gram "3" matches
    assert ContextIndex([1, 2, 3], max_ngram=3).propose(4) == []  # 3 never occurred before
    assert ContextIndex([], max_ngram=3).propose(4) == []
    assert ContextIndex([7, 7, 7], max_ngram=2).propose(5) == [7]  # overlapping run: what follows the latest "7 7"


@pytest.mark.parametrize("seed", range(20))
def test_matches_the_definition_on_random_text(seed):
    rng = random.Random(seed)
    vocab = rng.choice([2, 3, 5, 50])
    max_ngram, min_ngram = rng.choice([(1, 1), (2, 1), (3, 1), (3, 2), (4, 2)])
    tokens = [rng.randrange(vocab) for _ in range(rng.randrange(0, 60))]
    index = ContextIndex(tokens[:10], max_ngram=max_ngram, min_ngram=min_ngram)
    for i in range(10, len(tokens) + 1):
        if i > 10:
            index.extend(tokens[i - 1:i])
        k = rng.randrange(1, 8)
        assert index.propose(k) == brute_force(tokens[:i], max_ngram, min_ngram, k)


def test_bad_ngram_bounds_are_refused():
    with pytest.raises(ValueError, match="min_ngram"):
        ContextIndex([], max_ngram=2, min_ngram=3)


# --- in the decoder: exact, and visible in the records ----------------------------------------------

import torch  # noqa: E402

from selfspec import DraftSettings, SkipProfile, autoregressive, self_speculative  # noqa: E402
from selfspec.engine.controller import DraftLength  # noqa: E402
from tiny_models import CONFIGS, tiny_model  # noqa: E402


def reference(model, prompt, n):
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("arch", sorted(CONFIGS))
@pytest.mark.parametrize("controller", [False, True], ids=["copy-then-draft", "controller"])
def test_greedy_output_is_identical_with_tokens_copied_from_the_context(arch, controller):
    model = tiny_model(arch)
    prompt = list(range(2, 96)) + [2]  # every token has occurred with a follower: the context always proposes
    settings = DraftSettings(max_draft=3, exit="off", context_tokens=6, controller=controller)
    records = list(self_speculative(model, prompt, SkipProfile(4, attn=[1], mlp=[2]), 24, settings=settings))
    assert [t for r in records for t in r.token_ids] == reference(model, prompt, 24)
    copying = [r for r in records if r.copied]
    assert copying, "the context proposed nothing"
    for r in records:
        assert 0 <= r.copied <= min(6, r.drafted) and r.drafted - r.copied <= 3
        assert r.copied_accepted == min(r.accepted, r.copied)


def test_switching_context_drafts_off_copies_nothing():
    model = tiny_model("llama")
    prompt = [5, 17, 33, 8, 61] * 3
    off = list(self_speculative(model, prompt, SkipProfile(4, attn=[1]), 16,
                                settings=DraftSettings(max_draft=3, context_tokens=0)))
    assert all(r.copied == 0 for r in off)
    assert [t for r in off for t in r.token_ids] == [t for r in autoregressive(model, prompt, 16) for t in r.token_ids]
    with pytest.raises(ValueError, match="context_tokens"):
        DraftSettings(context_tokens=9)


# --- the controller's choice between copying, drafting and a plain step ------------------------------


def expected_by_cases(a_copy, m, a_draft, k):
    """Tokens a step commits, summed over where the first rejection falls (not the closed form)."""
    survive = [a_copy] * m + [a_draft] * k
    total, p_reached = 0.0, 1.0
    for n, a in enumerate(survive):
        total += p_reached * (1 - a) * (n + 1)  # rejected at position n: n kept + the correction
        p_reached *= a
    return total + p_reached * (len(survive) + 1)  # all kept + the bonus token


def taught(full, draft, verify, copy_kept, draft_kept, steps=40):
    """A controller that saw one plain step, then `steps` copy-only and draft-only steps of 4 tokens
    each, keeping `copy_kept` and `draft_kept` of them."""
    c = DraftLength(4)
    c.observe_plain(full)
    for _ in range(steps):
        c.observe_step(4, 0, copy_kept, 0.0, verify(4))
        c.observe_step(0, 4, draft_kept, draft * 4, verify(4))
    return c


@pytest.mark.parametrize("copy_kept,draft_kept", [(4, 2), (0, 3), (0, 0), (2, 2), (3, 4)])
def test_the_plan_maximises_the_expected_rate(copy_kept, draft_kept):
    verify = lambda width: 1.0 + 0.05 * width  # noqa: E731
    c = taught(1.0, 0.3, verify, copy_kept, draft_kept)
    a_c, a_d = c.context_acceptance(), c.acceptance()
    assert a_c == pytest.approx(copy_kept / (copy_kept + (copy_kept < 4)))  # geometric MLE, by hand
    best, best_rate = None, -1.0
    for m in range(0, 7):
        for k in range(0, 5):
            if m + k > 6:
                continue
            seconds = 1.0 if m + k == 0 else k * 0.3 + verify(4)  # only width 4 was ever measured
            rate = expected_by_cases(a_c, m, a_d, k) / seconds
            if rate > best_rate + 1e-12:
                best, best_rate = (m, k), rate
    assert c.plan(limit=6, available=6, max_context=8) == best


def test_the_plan_learns_an_unknown_source_first_and_copies_nothing_without_a_proposal():
    c = DraftLength(4)
    assert c.plan(10, available=3, max_context=8) == (0, 0)  # the full model's step time first
    c.observe_plain(1.0)
    assert c.plan(10, available=3, max_context=8) == (3, 0)  # what copying earns is learned at once
    assert c.plan(10, available=0, max_context=8) == (0, 4)  # no proposal: the draft alone, K tokens
    assert c.plan(2, available=5, max_context=8) == (2, 0)  # never past the tokens left
