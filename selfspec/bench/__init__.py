"""Benchmarks against peers: the prompt suite, the runner, the cost model that explains each number,
and the restricted draft vocabulary experiment."""
