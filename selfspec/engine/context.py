"""Drafts from the context: tokens copied from where the recent text occurred before.

When the output is copying (a summary quoting its source, an answer citing retrieved text, code
edits), the tokens that followed an earlier occurrence of the current suffix are a good guess and
cost no forward pass. `ContextIndex` keeps, for every n-gram (n <= max_ngram) of the prompt and the
committed output, where its most recent occurrence *that has a follower* ends, so a proposal is a
few dictionary look-ups however long the text is.

Once an occurrence is proposed from, it is *followed* while the text keeps matching it: the next
proposal continues from where the copy has got to, not from the latest occurrence of the new suffix.
A retrieved passage's phrases recur (the question quotes them, the answer repeats them), and the
latest occurrence of a 3-token suffix is then often the wrong copy: it broke every tenth token of a
copied answer. Only committed tokens are indexed: a rejected draft never needs undoing.
"""

from __future__ import annotations

from typing import Iterable


class ContextIndex:
    def __init__(self, tokens: Iterable[int] = (), max_ngram: int = 3, min_ngram: int = 1):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram
        self.tokens: list[int] = []
        self._follower_at: dict[tuple[int, ...], int] = {}  # n-gram -> index of the token after its latest occurrence
        self._copy_at: int | None = None  # index of the token the followed occurrence says comes next
        self._matched = 0  # tokens the text has matched that occurrence for
        self.extend(tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        """Append committed tokens."""
        for token in tokens:
            token = int(token)
            end = len(self.tokens)
            # The n-grams ending here now have a follower (the token being appended).
            for n in range(1, min(self.max_ngram, end) + 1):
                self._follower_at[tuple(self.tokens[end - n:end])] = end
            self.tokens.append(token)
            if self._copy_at is not None and self.tokens[self._copy_at] == token:
                self._copy_at, self._matched = self._copy_at + 1, self._matched + 1  # still copying
            else:
                self._copy_at, self._matched = self._latest_match()

    def _latest_match(self) -> tuple[int | None, int]:
        """Where the latest earlier occurrence of the longest matching suffix (n from max_ngram down to
        min_ngram) was followed from, and n; (None, 0) when nothing matches."""
        for n in range(min(self.max_ngram, len(self.tokens)), self.min_ngram - 1, -1):
            start = self._follower_at.get(tuple(self.tokens[-n:]))
            if start is not None:
                return start, n
        return None, 0

    def propose(self, max_tokens: int) -> list[int]:
        """Up to `max_tokens` tokens that followed the occurrence being copied; empty when nothing matches."""
        return self.propose_matched(max_tokens)[0]

    def propose_matched(self, max_tokens: int) -> tuple[list[int], int]:
        """`propose`, and how many tokens of the text match the occurrence it copies (0: no proposal).
        A one-token match is a much weaker guess than a longer one (docs/BENCHMARKS.md), so the
        controller learns the two apart."""
        if max_tokens < 1 or self._copy_at is None:
            return [], 0
        return self.tokens[self._copy_at:self._copy_at + max_tokens], self._matched
