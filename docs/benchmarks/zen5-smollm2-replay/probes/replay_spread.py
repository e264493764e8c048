"""Per category, copies + int4 against int4 alone replayed at a bench's costs (bench/replay.py), over groups of
seeds of host noise: the gap one bench run of GROUP repetitions would read. Usage, from the repository root:

    PYTHONPATH=$PWD python docs/benchmarks/zen5-smollm2-replay/probes/replay_spread.py TRANSCRIPTS BENCH_JSON SEEDS GROUP MODE

MODE: "noisy" (the controllers observe noisy costs), "time-only" (they observe exact costs; noise on the time only),
"itself" (int4 alone against itself, two noise draws). READ_SLOPE: r(m) = d (1 + slope m) (default 0.22, measured).
"""
import json, os, statistics, sys
from collections import defaultdict
from selfspec.bench.replay import Costs, Transcript, host_noise, replay_suite
rows, bench = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
seeds, group, mode = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
transcripts = [Transcript(tuple(r["prompt"]), tuple(r["text"]), tuple(map(tuple, r["drafts"]))) for r in rows]
categories = [r["category"] for r in rows]
method = next(k for k in bench["costs"] if "+context" in k and k.endswith("| all")).split(" | ")[0]
slope = float(os.environ.get("READ_SLOPE", "0.22"))
costs = {c: Costs.from_bench(bench["costs"][f"{method} | {c}"], [1 + slope * m for m in range(1, 25)]) for c in set(categories)}
arms = {"copies": 16, "alone": 0} if mode != "itself" else {"alone": 0, "alone again": 0}
seconds = {arm: [] for arm in arms}
for seed in range(seeds):
    for n, (arm, context) in enumerate(arms.items()):
        noise = host_noise(seed + 1000 * n)
        runs = replay_suite(transcripts, lambda i: costs[categories[i]], 8, context,
                            noise=None if mode == "time-only" else noise)
        per = defaultdict(float)
        for c, run in zip(categories, runs):
            per[c] += sum(t * (noise("verify") if mode == "time-only" else 1.0) for _, _, t in run.steps)
        seconds[arm].append(per)
first, second = arms
print(f"{first} against {second}, {mode}: mean over {seeds} seeds, then each group of {group}")
for c in dict.fromkeys(categories):
    mean = statistics.mean(s[c] for s in seconds[second]) / statistics.mean(s[c] for s in seconds[first]) - 1
    gaps = sorted(sum(s[c] for s in seconds[second][g:g + group]) / sum(s[c] for s in seconds[first][g:g + group]) - 1
                  for g in range(0, seeds, group))
    print(f"{c:14s} {100 * mean:+5.1f}%   " + " ".join(f"{100 * x:+.1f}" for x in gaps))
