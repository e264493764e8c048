"""The engine's proof: greedy output token-identical to the full model, sampling distribution-equal."""

from __future__ import annotations

import random
import threading

import pytest
import torch

import selfspec.engine.decoding as decoding
from selfspec import (
    DraftModel,
    DraftSettings,
    ProfileError,
    Sampling,
    SkipProfile,
    UnsupportedModelError,
    autoregressive,
    self_speculative,
    summarize,
)
from selfspec.engine.controller import Plan
from selfspec.engine.runtime import Engine
from selfspec.engine.sampling import greedy_choice, greedy_tokens, probabilities, sample
from tiny_models import CONFIGS, tiny_model

ARCHITECTURES = list(CONFIGS)


def generated(records) -> list[int]:
    return [t for r in records for t in r.token_ids]


def reference(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, len(prompt):].tolist()


def profiles_for(num_layers: int, rng: random.Random) -> list[SkipProfile]:
    """The named corner cases plus random profiles: at least 10 in all."""
    everything = list(range(num_layers))
    named = [
        SkipProfile(num_layers),  # nothing skipped
        SkipProfile(num_layers, attn=everything[1:], mlp=everything[1:]),  # all but one layer
        SkipProfile(num_layers, attn=everything[:-1], mlp=everything[:-1]),  # all but the last layer
        SkipProfile(num_layers, attn=[0], mlp=[0]),  # layer 0 skipped
        SkipProfile(num_layers, attn=[0]),  # layer 0's attention only
        SkipProfile(num_layers, attn=everything[::2]),  # attention only
        SkipProfile(num_layers, mlp=everything[1::2]),  # MLP only
        SkipProfile(num_layers, attn=everything, mlp=everything),  # every sublayer skipped
    ]
    randoms = [
        SkipProfile(num_layers, attn=rng.sample(everything, rng.randint(0, num_layers)),
                    mlp=rng.sample(everything, rng.randint(0, num_layers)))
        for _ in range(4)
    ]
    return named + randoms


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_greedy_is_token_identical_to_generate(arch):
    model = tiny_model(arch)
    rng = random.Random(arch)
    prompts = [[rng.randrange(2, 96) for _ in range(n)] for n in (1, 7, 19)]
    expected = {tuple(p): reference(model, p, 32) for p in prompts}
    settings = [DraftSettings(max_draft=1, exit="off"), DraftSettings(max_draft=3, exit="fixed", threshold=0.3),
                DraftSettings(max_draft=6, exit="adaptive"), DraftSettings(max_draft=12, exit="off")]
    for i, profile in enumerate(profiles_for(model.config.num_hidden_layers, rng)):
        for j, prompt in enumerate(prompts[i % 2:] if i > 2 else prompts):  # corner cases on every prompt
            setting = settings[(i + j) % len(settings)]
            got = generated(self_speculative(model, prompt, profile, 32, settings=setting))
            assert got == expected[tuple(prompt)], (arch, profile, setting, prompt)
    for prompt in prompts:
        assert generated(autoregressive(model, prompt, 32)) == expected[tuple(prompt)]


@pytest.mark.parametrize("arch,overrides", [
    ("mistral", {"sliding_window": 8}),
    ("gemma2", {"sliding_window": 6}),
    ("gemma3_text", {"sliding_window": 6}),
    ("qwen2", {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 2,
               "layer_types": ["full_attention", "full_attention", "sliding_attention", "sliding_attention"]}),
])
def test_greedy_identical_past_the_sliding_window(arch, overrides):
    model = tiny_model(arch, **overrides)
    prompt = [5, 9, 14, 3, 22, 7, 11, 40, 41, 8, 2]
    expected = reference(model, prompt, 30)
    for profile in profiles_for(4, random.Random(1))[:6]:
        got = generated(self_speculative(model, prompt, profile, 30, settings=DraftSettings(max_draft=5, exit="off")))
        assert got == expected, profile


def test_eager_attention_is_lossless_too():
    model = tiny_model("llama")
    model.config._attn_implementation = "eager"
    prompt = [3, 17, 29, 4]
    expected = reference(model, prompt, 30)
    for profile in profiles_for(4, random.Random(2)):
        assert generated(self_speculative(model, prompt, profile, 30,
                                          settings=DraftSettings(max_draft=4, exit="off"))) == expected


def test_stops_at_eos_and_at_the_budget():
    model = tiny_model("llama")
    prompt = [3, 4, 5]
    free = reference(model, prompt, 30)
    eos = free[7]  # pretend the 8th generated token ends generation
    model.generation_config.eos_token_id = eos
    expected = reference(model, prompt, 30)
    assert expected[-1] == eos and len(expected) <= 8
    profile = SkipProfile(4, attn=[1, 2], mlp=[3])
    assert generated(self_speculative(model, prompt, profile, 30)) == expected
    assert generated(autoregressive(model, prompt, 30)) == expected
    for budget in (1, 2, 3, 5):
        assert generated(self_speculative(model, prompt, profile, budget)) == expected[:budget]


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(temperature=0.8, seed=5)])
def test_plain_decoding_that_queues_each_step_before_reading_the_last_gives_the_same_tokens(monkeypatch, sampling):
    assert not decoding.reads_ahead(torch.device("cpu")) and decoding.reads_ahead(torch.device("cuda"))
    # As on an accelerator: each step is queued before the last one's token is read, so one step past an
    # end-of-sequence token runs in vain and is discarded; none runs past the budget.
    model = tiny_model("llama")
    prompt = [3, 4, 5]
    model.generation_config.eos_token_id = None
    free = generated(autoregressive(model, prompt, 30, sampling))
    engine = Engine(model)
    steps = []
    full = engine.full
    monkeypatch.setattr(engine, "full", lambda tokens, *rest, **kw: steps.append(tokens.shape[-1]) or full(tokens, *rest, **kw))
    for budget in (1, 2, 7):
        steps.clear()
        assert generated(autoregressive(model, prompt, budget, sampling, engine=engine, read_ahead=True)) == free[:budget]
        assert steps == [len(prompt)] + [1] * (budget - 1)  # the prefill, then one step per later token
    model.generation_config.eos_token_id = free[5]  # the 6th token ends generation
    steps.clear()
    assert generated(autoregressive(model, prompt, 30, sampling, engine=engine, read_ahead=True)) == \
        free[:free.index(free[5]) + 1]
    assert len(steps) == 1 + free.index(free[5]) + 1  # ...and one step was queued past it


def test_records_account_for_every_token():
    model = tiny_model("qwen2")
    model.generation_config.eos_token_id = None  # run the whole budget
    records = list(self_speculative(model, [7, 8, 9], SkipProfile(4, attn=[1], mlp=[2]), 40,
                                    settings=DraftSettings(max_draft=4, exit="off", context_tokens=0)))
    assert records[0].kind == "prefill" and len(records[0].token_ids) == 1
    for r in records[1:]:
        if r.kind == "speculate":
            assert 1 <= r.drafted <= 4 and 0 <= r.accepted <= r.drafted
            assert len(r.token_ids) <= r.accepted + 1
        assert r.elapsed_seconds >= records[0].elapsed_seconds
    summary = summarize(records)
    assert summary.new_tokens == sum(len(r.token_ids) for r in records) == 40
    # Every step but the last commits its accepted drafts plus one full-model token (the budget may cut the last).
    steps = [r for r in records if r.kind == "speculate"]
    assert all(len(r.token_ids) == r.accepted + 1 for r in steps[:-1])
    assert summary.accepted == sum(len(r.token_ids) - 1 for r in steps[:-1]) + steps[-1].accepted


def test_adaptive_threshold_follows_the_papers_rule():
    from selfspec import AdaptiveThreshold

    rule = AdaptiveThreshold(gamma=0.6, target=0.9)
    rule.update(accepted=1, drafted=4)  # AR = 0.25 <= 0.9: gamma moves up
    assert rule.threshold == pytest.approx(0.9 * 0.6 + 0.1 * 0.61)
    for _ in range(50):
        rule.update(accepted=4, drafted=4)  # AR -> 1 > 0.9: gamma moves down
    assert rule.threshold < 0.6
    assert rule.acceptance == pytest.approx(1.0, abs=1e-6)


def reference_rule(steps, gamma=0.6, alpha=0.9, k=4, eps=0.01, b1=0.5, b2=0.9):
    """The reference code's `auto_th_stop_draft` update, transcribed: [(accepted, drafted)] -> gammas."""
    matchness, out = 0.0, []
    for accepted, drafted in steps:
        matchness = b1 * matchness + (1 - b1) * accepted / drafted
        if matchness < alpha:
            proposal = gamma + eps
        else:
            proposal = gamma if drafted == k else gamma - eps
        gamma = b2 * gamma + (1 - b2) * proposal
        out.append(gamma)
    return out


def ours(steps, **kwargs):
    from selfspec import AdaptiveThreshold

    rule = AdaptiveThreshold(gamma=0.6, target=kwargs.get("alpha", 0.9))
    out = []
    for accepted, drafted in steps:
        rule.update(accepted, drafted)
        out.append(rule.threshold)
    return out


def test_adaptive_rule_agrees_with_the_reference_code_where_the_module_says_it_does():
    # Acceptance far below alpha from the start, drafts shorter than K: identical trajectories.
    low = [(0, 3), (1, 3), (0, 2)] * 5
    assert ours(low) == pytest.approx(reference_rule(low))
    # Running AR starts at the first rate here, at 0 there: after one fully accepted step of 3 we
    # read 1.0 > 0.9 and lower gamma, the reference reads 0.5 and raises it.
    assert ours([(3, 3)]) == pytest.approx([0.6 - 0.1 * 0.01])
    assert reference_rule([(3, 3)]) == pytest.approx([0.6 + 0.1 * 0.01])
    # Running AR exactly alpha (0.5: ours after a half-accepted step, the reference's after a fully
    # accepted one): we raise gamma (AR <= alpha, the paper), the reference lowers it (not AR < alpha).
    assert ours([(1, 2)], alpha=0.5) == pytest.approx([0.6 + 0.1 * 0.01])
    assert reference_rule([(2, 2)], alpha=0.5, k=9) == pytest.approx([0.6 - 0.1 * 0.01])
    # High acceptance with full-length drafts: we lower gamma, the reference holds it.
    full = [(4, 4)] * 10
    assert ours(full)[-1] < ours(full)[0] < 0.6
    warmed = reference_rule(full)
    assert warmed[-1] == pytest.approx(warmed[-2])  # AR above alpha, K reached: held


# --- sampling: distribution equality -----------------------------------------------------------


def _chi_square_p_value(observed: torch.Tensor, expected: torch.Tensor) -> float:
    """Pearson chi-square goodness of fit; cells expected below 5 are pooled."""
    small = expected < 5
    obs = torch.cat([observed[~small], observed[small].sum().view(1)])
    exp = torch.cat([expected[~small], expected[small].sum().view(1)])
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    statistic = ((obs - exp) ** 2 / exp).sum()
    dof = len(obs) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), statistic.double() / 2))


def _exact_second_third(model, prompt: list[int], sampling: Sampling) -> torch.Tensor:
    """P(t2, t3) under the full model's own sampling, summed over t1, by enumeration."""
    vocab = model.config.vocab_size

    def dist(ids):
        with torch.no_grad():
            return probabilities(model(torch.tensor([ids])).logits[0, -1], sampling)

    joint = torch.zeros(vocab, vocab, dtype=torch.float64)
    p1 = dist(prompt)
    for t1 in range(vocab):
        p2 = dist(prompt + [t1])
        for t2 in range(vocab):
            joint[t2] += p1[t1] * p2[t2] * dist(prompt + [t1, t2]).double()
    return joint.flatten()


def _sampled_second_third(model, prompt, draft, sampling, draws: int, context_tokens: int = 0) -> torch.Tensor:
    vocab = model.config.vocab_size
    counts = torch.zeros(vocab * vocab, dtype=torch.float64)
    settings = DraftSettings(max_draft=2, exit="off", context_tokens=context_tokens)
    engine = Engine(model)  # one for every draw, as a caller serving many requests keeps (LanguageModel.engine)
    for seed in range(draws):
        s = Sampling(temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p, seed=seed)
        # Budget 4 and K = 2: the 2nd and 3rd tokens both come out of the first draft/verify step.
        tokens = generated(self_speculative(model, prompt, draft, 4, s, settings, engine=engine))
        counts[tokens[1] * vocab + tokens[2]] += 1
    return counts


@pytest.fixture(scope="module")
def small_vocab_model():
    model = tiny_model("llama", vocab_size=5, seed=3)
    model.generation_config.eos_token_id = None  # every draw yields 4 tokens
    return model  # with this seed the draft below is off from the full model by ~0.2 total variation


SAMPLING_CASES = [Sampling(temperature=1.0), Sampling(temperature=0.8, top_k=3, top_p=0.9)]


@pytest.mark.parametrize("sampling,weights", [(SAMPLING_CASES[0], "full"), (SAMPLING_CASES[1], "full"),
                                              (SAMPLING_CASES[0], "int4")], ids=["plain", "top-k-top-p", "int4"])
def test_sampling_matches_the_full_model_distribution(small_vocab_model, sampling, weights):
    model, prompt = small_vocab_model, [0, 2, 4]
    draft = DraftModel(model, SkipProfile(4, attn=[1, 2, 3], mlp=[0, 2, 3]), weights=weights)
    draws = 800
    expected = _exact_second_third(model, prompt, sampling) * draws
    observed = _sampled_second_third(model, prompt, draft, sampling, draws)
    assert _chi_square_p_value(observed, expected) > 1e-3


# A prompt that repeats itself, so the context proposes a token at the first step.
REPEATING = [0, 2, 4, 1, 0, 2, 4, 1, 0, 2]


@pytest.mark.parametrize("sampling", SAMPLING_CASES, ids=["plain", "top-k-top-p"])
def test_sampling_stays_exact_with_tokens_copied_from_the_context(small_vocab_model, sampling):
    model, profile, draws = small_vocab_model, SkipProfile(4, attn=[1, 2, 3], mlp=[0, 2, 3]), 800
    settings = DraftSettings(max_draft=2, exit="off", context_tokens=1)
    first = list(self_speculative(model, REPEATING, profile, 4, Sampling(temperature=1.0, seed=0), settings))[1]
    assert first.copied == 1 and first.drafted == 2  # one token copied ("4" followed "0 2"), one drafted after it
    expected = _exact_second_third(model, REPEATING, sampling) * draws
    observed = _sampled_second_third(model, REPEATING, profile, sampling, draws, context_tokens=1)
    assert _chi_square_p_value(observed, expected) > 1e-3


def _vetting_every_copy(lengths, settings, left, available, match):
    """A plan for every step: the context's copies vetted by the draft's first token, K drafts if it
    disagrees (the controller picks such plans only where they pay)."""
    if not available or not left:
        return Plan(0, min(settings.max_draft, left))
    return Plan(min(available, settings.context_tokens, left), min(settings.max_draft, left), vetted=True)


def _vetted_steps(records) -> tuple[int, int]:
    """(steps that verified copies alone, steps that verified drafts alone)."""
    steps = [r for r in records if r.kind == "speculate"]
    return sum(r.copied == r.drafted > 0 for r in steps), sum(r.drafted > r.copied == 0 for r in steps)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_greedy_stays_token_identical_with_copies_vetted_by_the_draft(arch, monkeypatch):
    monkeypatch.setattr(decoding, "_plan", _vetting_every_copy)
    model = tiny_model(arch)
    model.generation_config.eos_token_id = None  # the whole budget, for the copies to show up
    prompt = [5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]
    profile = SkipProfile(model.config.num_hidden_layers)  # the draft is the model: it agrees with right copies
    settings = DraftSettings(max_draft=3, exit="off", context_tokens=4)
    records = list(self_speculative(model, prompt, profile, 32, settings=settings))
    assert generated(records) == reference(model, prompt, 32)
    copies_alone, drafts_alone = _vetted_steps(records)
    assert copies_alone and drafts_alone  # the draft agreed with the copies at some steps, not at others


@pytest.mark.parametrize("sampling", SAMPLING_CASES, ids=["plain", "top-k-top-p"])
def test_sampling_stays_exact_with_copies_vetted_by_the_draft(small_vocab_model, sampling, monkeypatch):
    monkeypatch.setattr(decoding, "_plan", _vetting_every_copy)
    model, profile, draws = small_vocab_model, SkipProfile(4, attn=[1, 2, 3], mlp=[0, 2, 3]), 800
    expected = _exact_second_third(model, REPEATING, sampling) * draws
    observed = _sampled_second_third(model, REPEATING, profile, sampling, draws, context_tokens=1)
    assert _chi_square_p_value(observed, expected) > 1e-3
    copies_alone, drafts_alone = 0, 0
    for seed in range(20):
        s = Sampling(temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p, seed=seed)
        counts = _vetted_steps(self_speculative(model, REPEATING, profile, 4, s,
                                                DraftSettings(max_draft=2, exit="off", context_tokens=1)))
        copies_alone, drafts_alone = copies_alone + counts[0], drafts_alone + counts[1]
    assert copies_alone and drafts_alone


@pytest.mark.parametrize("weights,context_tokens", [("full", 0), ("int4", 0), ("full", 2)],
                         ids=["full", "int4", "copied"])
def test_the_chi_square_test_catches_a_broken_acceptance_rule(small_vocab_model, monkeypatch, weights,
                                                              context_tokens):
    def accept_everything(drafted, draft_probs, target_probs, generator):
        return len(drafted), sample(target_probs[len(drafted)], generator)

    monkeypatch.setattr(decoding, "accept_sampled", accept_everything)
    model, sampling = small_vocab_model, SAMPLING_CASES[0]
    prompt = REPEATING if context_tokens else [0, 2, 4]
    draft = DraftModel(model, SkipProfile(4, attn=[1, 2, 3], mlp=[0, 2, 3]), weights=weights)
    draws = 800
    expected = _exact_second_third(model, prompt, sampling) * draws
    observed = _sampled_second_third(model, prompt, draft, sampling, draws, context_tokens)
    assert _chi_square_p_value(observed, expected) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_greedy_tokens_are_the_first_maximum_of_each_row_in_every_dtype(dtype):
    torch.manual_seed(0)
    logits = torch.randn(4, 1000).to(dtype)
    logits[1, [17, 400, 901]] = 9.0  # a three-way tie: the first one wins
    logits[2, :] = 0.0  # all tied
    rows = logits.tolist()
    expected = [max(range(len(row)), key=lambda i: (row[i], -i)) for row in rows]  # by hand, on the values
    assert greedy_tokens(logits).tolist() == expected == [int(t) for t in logits.argmax(-1)]
    assert expected[1] == 17 and expected[2] == 0
    assert greedy_tokens(logits[3]).item() == expected[3]


def test_sampling_with_a_seed_is_reproducible():
    model = tiny_model("qwen3")
    profile = SkipProfile(4, attn=[0, 3], mlp=[1])
    runs = [generated(self_speculative(model, [4, 5], profile, 25, Sampling(temperature=0.9, seed=11)))
            for _ in range(2)]
    assert runs[0] == runs[1]


# --- the model is left exactly as it was -------------------------------------------------------


def _snapshot(model):
    probe = torch.tensor([[3, 14, 15, 92, 65]])
    with torch.no_grad():
        logits = model(probe).logits.clone()
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modules": [(name, type(m).__name__, id(m)) for name, m in model.named_modules()],
        "hooks": [(name, len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()],
        "training": model.training,
        "config": model.config.to_dict(),
        "logits": logits,
    }


def _assert_same(before, after):
    assert before["modules"] == after["modules"]
    assert before["hooks"] == after["hooks"]
    assert before["training"] == after["training"]
    assert before["config"] == after["config"]
    assert before["params"].keys() == after["params"].keys()
    for key, value in before["params"].items():
        assert torch.equal(value, after["params"][key]), key
    assert torch.equal(before["logits"], after["logits"])


class ExplodingDraft(DraftModel):
    """A draft that fails on its n-th forward, as a crash mid-draft would."""

    def __init__(self, model, profile, fail_at: int):
        super().__init__(model, profile)
        self.calls, self.fail_at = 0, fail_at

    def forward(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("injected failure")
        return super().forward(*args, **kwargs)

    __call__ = forward


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_model_unchanged_after_runs_errors_and_stops(arch):
    model = tiny_model(arch)
    before = _snapshot(model)
    profile = SkipProfile(4, attn=[0, 2], mlp=[1, 3])
    expected = generated(self_speculative(model, [1, 2, 3], profile, 30))
    _assert_same(before, _snapshot(model))

    with pytest.raises(RuntimeError, match="injected"):
        # Context drafts and the controller off: copied tokens or plain steps would replace draft calls,
        # and the 6th might never come.
        list(self_speculative(model, [1, 2, 3], ExplodingDraft(model, profile, fail_at=6), 30,
                              settings=DraftSettings(context_tokens=0, controller=False)))
    _assert_same(before, _snapshot(model))

    stopped = self_speculative(model, [1, 2, 3], profile, 30)
    next(stopped), next(stopped)
    stopped.close()  # what a Stop button does
    _assert_same(before, _snapshot(model))
    assert generated(self_speculative(model, [1, 2, 3], profile, 30)) == expected
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()  # no mode leaks to the caller


def test_many_threads_share_one_model():
    model = tiny_model("mistral")
    prompts = [[i, i + 1, i + 2] for i in range(2, 8)]
    expected = [reference(model, p, 25) for p in prompts]
    results = [None] * len(prompts)

    def work(i):
        results[i] = generated(self_speculative(model, prompts[i], SkipProfile(4, attn=[i % 4]), 25))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


# --- bad input ---------------------------------------------------------------------------------


def test_bad_requests_are_refused_clearly():
    model = tiny_model("llama")
    profile = SkipProfile(4, attn=[1])
    with pytest.raises(ValueError, match="prompt is empty"):
        self_speculative(model, [], profile, 10)
    with pytest.raises(ValueError, match="prompt is empty"):
        autoregressive(model, [], 10)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="max_new_tokens"):
            self_speculative(model, [1, 2], profile, bad)
    with pytest.raises(ValueError, match="context holds 256"):
        self_speculative(model, [3] * 300, profile, 10)
    with pytest.raises(ProfileError, match="6 layers"):
        self_speculative(model, [1, 2], SkipProfile(6, attn=[5]), 10)
    with pytest.raises(ValueError, match="max_draft"):
        DraftSettings(max_draft=0)
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        Sampling(temperature=1, top_p=0)
    # Generation near the end of the context stops there instead of failing.
    assert len(generated(self_speculative(model, [3] * 250, profile, 50))) <= 6


@pytest.mark.parametrize("data,message", [
    ({"num_layers": 4, "attn": [4], "mlp": []}, "out of range"),
    ({"num_layers": 4, "attn": [-1], "mlp": []}, "out of range"),
    ({"num_layers": 4, "attn": [1, 1], "mlp": []}, "more than once"),
    ({"num_layers": 4, "attn": ["1"], "mlp": []}, "non-integer"),
    ({"num_layers": 0, "attn": [], "mlp": []}, "positive"),
    ({"num_layers": 4, "attn": []}, "missing"),
    ([1, 2], "JSON object"),
])
def test_bad_profiles_are_refused(data, message):
    with pytest.raises(ProfileError, match=message):
        SkipProfile.from_dict(data)


def test_unsupported_architecture_names_the_supported_ones():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match="gpt2.*Llama.*Qwen3.*Phi-3"):
        DraftModel(model, SkipProfile(2))


def test_the_draft_exit_stops_only_drafts_that_skip_sublayers():
    model = tiny_model("llama")
    prompt = [5, 9, 14, 3]
    expected = reference(model, prompt, 24)
    # A threshold of 1.0 stops a draft after its first token whenever the rule applies.
    settings = DraftSettings(max_draft=4, exit="fixed", threshold=1.0, context_tokens=0, controller=False)
    for profile, drafted in ((SkipProfile(4, attn=[1]), {1}), (SkipProfile(4), {4})):
        records = list(self_speculative(model, prompt, profile, 24, settings=settings))
        assert generated(records) == expected
        steps = [r for r in records if r.kind == "speculate"]
        # Every step but one near the end (fewer tokens left than K) drafts exactly this many.
        assert {r.drafted for r in steps[:-2]} == drafted, profile


@pytest.mark.parametrize("size", [1, 13, 49152])
def test_the_greedy_choice_is_the_first_maximum_and_its_softmax_probability(size):
    """sampling.greedy_choice (one C++ call for a float32 row on a CPU) against torch's argmax and softmax."""
    torch.manual_seed(size)
    logits = torch.randn(size) * 4
    if size > 2:
        logits[[size // 3, size - 1]] = logits.max() + 1.0  # a tie: the first one wins
    for row in (logits, logits.bfloat16()):  # the second takes torch's way
        index, probability = greedy_choice(row, True)
        expected = int(row.float().argmax())
        assert index.shape == (1,) and index.dtype == torch.long and int(index) == expected
        assert probability == pytest.approx(float(torch.softmax(row.double(), -1)[expected]), rel=1e-5)
        assert greedy_choice(row, False)[1] is None
    if size > 2:
        assert int(greedy_choice(logits, False)[0]) == size // 3
        logits[[size // 2, size - 2]] = float("nan")  # as torch's argmax: the first NaN, and no probability
        index, probability = greedy_choice(logits, True)
        assert int(index) == int(logits.argmax()) == size // 2 and probability != probability
