"""Captured CUDA graphs' memory pool, against a stand-in for torch's CUDA graph API (CI has no GPU)."""

from __future__ import annotations

import contextlib
import gc
import itertools

import pytest
import torch

from selfspec.engine.captured import CapturedGraphs


class FakeCuda:
    """Records the pool each capture is given; each graph's own pool is a new id unless it was given one.
    Like torch's allocator, it refuses a pool whose graphs were all dropped (use count 0)."""

    def __init__(self):
        self.given, self.users, self._ids = [], {}, itertools.count(1)
        fake = self

        class Graph:
            def __init__(self):
                self._pool = None

            def pool(self):
                return self._pool

            def replay(self):
                pass

            def __del__(self):
                if self._pool is not None:
                    fake.users[self._pool] -= 1

        @contextlib.contextmanager
        def graph(g, pool=None):
            fake.given.append(pool)
            if pool is not None and fake.users.get(pool, 0) == 0:
                raise RuntimeError("it->second->use_count > 0 INTERNAL ASSERT FAILED")
            g._pool = pool if pool is not None else (next(fake._ids), 0)
            fake.users[g._pool] = fake.users.get(g._pool, 0) + 1
            yield

        self.CUDAGraph, self.graph = Graph, graph


@pytest.fixture
def fake_cuda(monkeypatch):
    fake = FakeCuda()
    monkeypatch.setattr(torch.cuda, "CUDAGraph", fake.CUDAGraph)
    monkeypatch.setattr(torch.cuda, "graph", fake.graph)

    class Stream:
        def wait_stream(self, other):
            pass
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", Stream)
    return fake


class Held:  # a cache or draft a graph holds: the graph goes with it
    pass


def test_graphs_share_one_pool_while_any_is_held_and_a_new_one_after_all_are_dropped(fake_cuda):
    graphs = CapturedGraphs()
    step = lambda x: x * 2 + 1
    x = torch.ones(3)
    first, second = Held(), Held()
    out, was_captured = graphs.run("a", [first], step, (x,), lambda: None)
    assert was_captured and torch.equal(out, torch.full((3,), 3.0))
    graphs.run("b", [second], step, (x,), lambda: None)
    assert fake_cuda.given[0] is None and fake_cuda.given[1] is not None  # the second shares the first's pool
    shared = fake_cuda.given[1]
    del first
    gc.collect()
    graphs.run("c", [second], step, (x,), lambda: None)  # one graph is still held: same pool
    assert fake_cuda.given[2] == shared
    _, again = graphs.run("c", [second], step, (x,), lambda: None)
    assert not again  # replayed, not captured
    del second
    gc.collect()
    third = Held()
    out, was_captured = graphs.run("d", [third], step, (x,), lambda: None)  # every graph dropped: a new pool
    assert was_captured and fake_cuda.given[3] is None and torch.equal(out, torch.full((3,), 3.0))
