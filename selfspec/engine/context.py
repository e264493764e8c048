"""Drafts from the context: tokens copied from where the recent text occurred before.

When the output is copying (a summary quoting its source, an answer citing retrieved text, code
edits), the tokens that followed the last occurrence of the current suffix are a good guess and cost
no forward pass. `ContextIndex` keeps, for every n-gram (n <= max_ngram) of the prompt and the
committed output, where its most recent occurrence *that has a follower* ends, so a proposal is a
few dictionary look-ups however long the text is. Only committed tokens are indexed: a rejected
draft never needs undoing.
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
        self.extend(tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        """Append committed tokens."""
        for token in tokens:
            end = len(self.tokens)
            # The n-grams ending here now have a follower (the token being appended).
            for n in range(1, min(self.max_ngram, end) + 1):
                self._follower_at[tuple(self.tokens[end - n:end])] = end
            self.tokens.append(int(token))

    def propose(self, max_tokens: int) -> list[int]:
        """Up to `max_tokens` tokens that followed the latest earlier occurrence of the longest
        matching suffix (n from max_ngram down to min_ngram); empty when nothing matches."""
        return self.propose_matched(max_tokens)[0]

    def propose_matched(self, max_tokens: int) -> tuple[list[int], int]:
        """`propose`, and the length n of the suffix it matched (0: no proposal). A one-token match is
        a much weaker guess than a longer one (docs/BENCHMARKS.md), so the controller learns the two
        apart."""
        if max_tokens < 1:
            return [], 0
        for n in range(min(self.max_ngram, len(self.tokens)), self.min_ngram - 1, -1):
            start = self._follower_at.get(tuple(self.tokens[-n:]))
            if start is not None:
                return self.tokens[start:start + max_tokens], n
        return [], 0
