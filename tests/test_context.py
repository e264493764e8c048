import random

import pytest

from selfspec.engine.context import ContextIndex


def latest_match(tokens, max_ngram, min_ngram):
    """By scanning: where the latest earlier occurrence of the longest matching suffix was followed
    from, and the suffix's length; (None, 0) when nothing matches."""
    for n in range(min(max_ngram, len(tokens)), min_ngram - 1, -1):
        suffix = tokens[-n:]
        for start in range(len(tokens) - n - 1, -1, -1):  # an occurrence that has a follower
            if tokens[start:start + n] == suffix:
                return start + n, n
    return None, 0


def brute_force(tokens, max_ngram, min_ngram, max_tokens):
    """The definition, token by token: follow the occurrence being copied while each new token matches
    what followed it, else take the latest occurrence of the longest matching suffix. The proposal is
    what follows the followed occurrence, with how many tokens matched it (0: none)."""
    copy_at, matched = None, 0
    for i in range(1, len(tokens) + 1):
        if copy_at is not None and tokens[copy_at] == tokens[i - 1]:
            copy_at, matched = copy_at + 1, matched + 1
        else:
            copy_at, matched = latest_match(tokens[:i], max_ngram, min_ngram)
    if copy_at is None:
        return [], 0
    return tokens[copy_at:copy_at + max_tokens], matched


def test_copies_what_followed_the_latest_occurrence():
    index = ContextIndex([5, 6, 7, 8, 1, 5, 6, 9, 2, 5, 6], max_ngram=2)
    assert index.propose(3) == [9, 2, 5]  # "5 6" last occurred before "9 2 5", not before "7 8"
    assert index.propose_matched(3)[1] == 2
    index.extend([9])
    assert index.propose(2) == [2, 5]
    assert index.propose(0) == []


def test_a_copy_is_followed_past_a_phrase_that_recurs_elsewhere():
    passage, question = [10, 11, 12, 13, 14, 15, 16, 17], [20, 11, 12, 13, 99]
    index = ContextIndex(passage + question + [10, 11, 12, 13], max_ngram=3)
    # The latest occurrence of the suffix "11 12 13" is the question's, followed by 99; the answer is
    # copying the passage from its "10", so the copy goes on with the passage.
    assert latest_match(index.tokens, 3, 1) == (len(passage) + 4, 3)
    assert index.propose_matched(2) == ([14, 15], 4)
    index.extend([14, 50])  # the answer leaves the passage: the latest occurrence again ("50": none)
    assert index.propose(2) == []
    index.extend([11])
    assert index.propose_matched(2) == ([12, 13], 1)  # the latest "11", the answer's own


def test_falls_back_to_shorter_ngrams_and_to_nothing():
    index = ContextIndex([1, 2, 3, 4, 3], max_ngram=3)
    assert index.propose(2) == [4, 3]  # only the 1-gram "3" matches
    assert index.propose_matched(2) == ([4, 3], 1)
    assert ContextIndex([1, 2, 3, 1, 2], max_ngram=3).propose_matched(5) == ([3, 1, 2], 2)
    assert ContextIndex([1, 2, 3], max_ngram=3).propose(4) == []  # 3 never occurred before
    assert ContextIndex([], max_ngram=3).propose(4) == []
    assert ContextIndex([7, 7, 7], max_ngram=2).propose(5) == [7]  # overlapping run: the copy follows itself


@pytest.mark.parametrize("seed", range(30))
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
        assert index.propose_matched(k) == brute_force(tokens[:i], max_ngram, min_ngram, k)
        assert index.propose(k) == brute_force(tokens[:i], max_ngram, min_ngram, k)[0]
        # Committed in one batch or token by token, the index ends in the same state.
        assert ContextIndex(tokens[:i], max_ngram, min_ngram).propose_matched(k) == index.propose_matched(k)


def test_bad_ngram_bounds_are_refused():
    with pytest.raises(ValueError, match="min_ngram"):
        ContextIndex([], max_ngram=2, min_ngram=3)


# --- in the decoder: exact, and visible in the records ----------------------------------------------

import torch  # noqa: E402

from selfspec import DraftSettings, SkipProfile, autoregressive, self_speculative  # noqa: E402
from selfspec.engine.settings import MAX_CONTEXT_TOKENS  # noqa: E402
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
    # Without the controller copies always go first. With it they are verified only while the full
    # model's own choices show them paying, which on a random model they do not.
    assert copying or controller, "the context proposed nothing"
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
        DraftSettings(context_tokens=MAX_CONTEXT_TOKENS + 1)


def test_the_draft_keeps_only_the_copies_it_would_have_chosen():
    from selfspec.engine.cache import new_cache
    from selfspec.engine.decoding import draft_tokens, forward_full
    from selfspec.engine.draft import DraftModel
    from selfspec.engine.sampling import Sampling

    model = tiny_model("llama", seed=5)
    draft = DraftModel(model, SkipProfile(4, attn=[1], mlp=[2]))
    prompt, pending = torch.tensor([[5, 17, 33, 8, 61]]), torch.tensor(9)
    position = prompt.shape[1]

    def prefilled():
        cache = new_cache(4, 64)
        forward_full(model, prompt, 0, cache)
        return cache

    # The draft's own greedy chain after the pending token, drafted one token at a time.
    own = draft_tokens(draft, pending, position, prefilled(), 5, 0.0, Sampling(), None).tokens.tolist()
    wrong = (own[2] + 1) % model.config.vocab_size
    copied = torch.tensor(own[:2] + [wrong, own[3]])
    result = draft_tokens(draft, pending, position, prefilled(), 3, 0.0, Sampling(), None, copied=copied)
    assert result.copies_kept == 2  # the third copy is not what the draft would choose
    assert result.tokens.tolist() == own[2:5]  # it continues from its own third token
    agreed = draft_tokens(draft, pending, position, prefilled(), 1, 0.0, Sampling(), None, copied=torch.tensor(own[:4]))
    assert agreed.copies_kept == 4 and agreed.tokens.tolist() == [own[4]]
