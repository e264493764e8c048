"""Kernels chosen per machine, by measurement.

The project's machines differ (an AMD EPYC without AVX-512, an Intel Xeon with AMX, GPUs): a product
that is fastest on one can be several times slower on the next. So wherever there are several ways to
compute the same thing, the engine times the candidates on this machine, at the model's own shapes,
and uses the fastest. A choice is cached on disk per machine, library versions and key, so it costs
its (short) measurement once -- but only a trustworthy one: timings taken while other work competes
for the cores (the load average above the core count) or that scatter widely are used for this
process alone and measured again next time, so one busy moment never fixes a wrong choice for good.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from selfspec.engine.devices import synchronize
from selfspec.engine.host import cache_root
from selfspec.engine.native_build import source_digest


@dataclass(frozen=True)
class KernelChoice:
    key: str  # what was chosen, e.g. "verify-linear:576x49152:rows2-5"
    name: str  # the winning candidate
    milliseconds: dict[str, float] = field(default_factory=dict)  # median per candidate
    cached: bool = False  # read from the on-disk cache instead of measured now
    trusted: bool = True  # measured on a quiet machine with steady timings (only such choices are cached)
    candidates: tuple[str, ...] = ()  # every candidate offered (default: those timed)

    def to_dict(self) -> dict:
        return {"key": self.key, "name": self.name, "milliseconds": self.milliseconds, "cached": self.cached,
                "trusted": self.trusted}

    def offered(self) -> set[str]:
        return set(self.candidates or self.milliseconds)


def machine_fingerprint(device: torch.device) -> str:
    """What a cached choice is only valid for: processor (or GPU), threads and library versions, the engine's own
    kernels (native_build.py) among them: a choice timed against an older build of them is timed again."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = cpu_model() + f" x{torch.get_num_threads()}"
    return f"{where} | torch {torch.__version__} | {platform.python_version()} | kernels {source_digest()}"


@functools.cache  # the processor does not change while the process runs; every cache lookup names it
def cpu_model() -> str:
    """The processor's name as the kernel reports it (what every measurement names)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_cache_file() -> Path:
    return cache_root() / "kernels.json"


SCATTER_LIMIT = 0.25  # interquartile range over median above which a candidate's timings are not trusted
JITTER_MS = 0.05  # ... unless the range is this small: microsecond products always scatter, harmlessly
CONTENDER_RATIO = 1.5  # a candidate this much slower than the fastest in its first samples is timed no more
FIRST_SAMPLES = 2  # each candidate's samples before that test: a loser must lose in both
BUSY_LOAD_PER_CORE = 1.5  # 1-minute load average per core above which the machine counts as busy


def millisecond_samples(run: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        run()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def median_milliseconds(run: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    return statistics.median(millisecond_samples(run, device, repeats, warmup))


def steady(samples: list[float]) -> bool:
    """One candidate's timings agree: their interquartile range is small against their median."""
    if len(samples) < 3:
        return True
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q3 - q1 <= max(SCATTER_LIMIT * statistics.median(samples), JITTER_MS)


def machine_busy(device: torch.device) -> bool:
    """Other work competes for the CPU: the 1-minute load average is well above the core count."""
    if device.type != "cpu":
        return False  # a GPU's timings do not suffer from a busy host the same way
    try:
        return os.getloadavg()[0] > BUSY_LOAD_PER_CORE * (os.cpu_count() or 1)
    except OSError:
        return False


def choose_fastest(
    key: str,
    candidates: dict[str, Callable[[], object]],
    device: torch.device,
    *,
    repeats: int = 7,
    rounds: int = 3,
    cache_file: Path | None = None,
    incumbent: str | None = None,
    margin: float = 0.0,
    warm_ups: dict[str, Callable[[], object]] | None = None,
) -> KernelChoice:
    """Time every candidate (interleaved sample by sample, up to `rounds` x `repeats` samples, median)
    and return the fastest. Timing stops early where more samples cannot change the answer: a
    candidate far slower than the fastest in its first samples is not timed again (_contenders), and
    when the first samples already agree on the choice even at its worst against the others at their
    best (_settled), none is timed again.

    With an `incumbent` (the usual kernel), another candidate wins only if it is faster by more than
    `margin` (a fraction): a near-tie is noise, not a reason to leave the usual path.
    `warm_ups` (by name) are cheaper calls that run each candidate's code path once before timing
    (default: the candidate itself). A candidate that raises is skipped (a kernel this build or device
    lacks). The result is cached under (machine fingerprint, key); set `cache_file` to a path to use
    another file, or disable the cache with SELFSPEC_KERNEL_CACHE=0.
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    cached = cached_choice(key, device, cache_file)
    if cached is not None and cached.name in candidates and set(candidates) <= cached.offered():
        return cached  # (a candidate new since then -- a new kernel -- is measured, not passed over)
    samples: dict[str, list[float]] = {}
    for name, run in candidates.items():
        try:
            millisecond_samples((warm_ups or {}).get(name, run), device, 0, warmup=1)
            samples[name] = []
        except (RuntimeError, NotImplementedError):
            pass
    _sample(samples, list(samples), candidates, device, FIRST_SAMPLES)  # interleaved: noise favours none
    contenders = _contenders(samples)
    if not _settled({name: samples[name] for name in contenders}, incumbent, margin):
        _sample(samples, contenders, candidates, device, rounds * repeats - FIRST_SAMPLES)
    if not samples:
        raise RuntimeError(f"no candidate for {key} runs on this machine")
    milliseconds = {name: round(statistics.median(ts), 4) for name, ts in samples.items()}
    best = _decision(milliseconds, incumbent, margin)
    trusted = all(steady(ts) for ts in samples.values()) and not machine_busy(device)
    choice = KernelChoice(key, best, milliseconds, trusted=trusted, candidates=tuple(candidates))
    remember_choice(choice, device, cache_file)
    return choice


def _sample(samples: dict[str, list[float]], names: list[str], candidates: dict[str, Callable[[], object]],
            device: torch.device, count: int) -> None:
    """`count` more samples of each of `names`, one candidate after the other in turn; one that raises is
    dropped from both."""
    for _ in range(count):
        for name in list(names):
            try:
                samples[name] += millisecond_samples(candidates[name], device, 1, warmup=0)
            except (RuntimeError, NotImplementedError):
                del samples[name]
                names.remove(name)


def _decision(milliseconds: dict[str, float], incumbent: str | None, margin: float) -> str:
    """The fastest, unless it beats the incumbent by no more than `margin`."""
    best = min(milliseconds, key=milliseconds.get)
    if incumbent in milliseconds and milliseconds[best] > milliseconds[incumbent] * (1 - margin):
        return incumbent
    return best


def _settled(samples: dict[str, list[float]], incumbent: str | None, margin: float) -> bool:
    """The choice would be the same with the chosen candidate at its slowest sample and every other at
    its fastest: the samples do not overlap where it matters, so more of them cannot change it."""
    if not samples or any(not ts for ts in samples.values()):
        return False
    chosen = _decision({name: statistics.median(ts) for name, ts in samples.items()}, incumbent, margin)
    pessimistic = {name: max(ts) if name == chosen else min(ts) for name, ts in samples.items()}
    return _decision(pessimistic, incumbent, margin) == chosen


def _contenders(first: dict[str, list[float]]) -> list[str]:
    """Candidates not slower than CONTENDER_RATIO x the fastest's median in every first sample: only they
    are timed again. A loser must lose twice, so one noisy sample neither drops a candidate nor hides an
    erratic one's scatter (which keeps a choice from being cached)."""
    if not first:
        return []
    best = min(statistics.median(ts) for ts in first.values())
    return [name for name, ts in first.items() if min(ts) <= CONTENDER_RATIO * best]


def _use_cache() -> bool:
    return os.environ.get("SELFSPEC_KERNEL_CACHE", "1") != "0"


def cached_choice(key: str, device: torch.device, cache_file: Path | None = None) -> KernelChoice | None:
    """A choice made earlier on this machine under `key` (any measured choice, not only kernels): a trusted
    one from the file, else an untrusted one this process made."""
    if not _use_cache():
        return None
    path, full_key = _slot(key, device, cache_file)
    cached = _read_cache(path).get(full_key)
    if not cached or "name" not in cached:
        return _untrusted_here.get((path, full_key))
    return KernelChoice(key, cached["name"], dict(cached.get("milliseconds", {})), cached=True,
                        candidates=tuple(cached.get("candidates", ())))


def remember_choice(choice: KernelChoice, device: torch.device, cache_file: Path | None = None) -> None:
    """A trusted choice goes to the file; an untrusted one holds for the rest of this process only. Once made,
    a choice is never remeasured within a process, so every model built in it computes the same way:
    kernels round differently, and a seeded sample must not change between two loads of one model."""
    if not _use_cache():
        return
    path, full_key = _slot(choice.key, device, cache_file)
    if choice.trusted:
        _write_cache(path, full_key, choice)
    else:
        _untrusted_here[(path, full_key)] = replace(choice, cached=True)


def _slot(key: str, device: torch.device, cache_file: Path | None) -> tuple[Path, str]:
    """Where a choice under `key` is kept: (the cache file, its key there, which names the machine)."""
    return cache_file or default_cache_file(), f"{machine_fingerprint(device)} | {key}"


# Untrusted choices made in this process, by (cache file, full key): measured again by the next process.
_untrusted_here: dict[tuple[Path, str], KernelChoice] = {}


# Each cache file as last parsed, with the version of the file it came from. Building an engine looks up
# some 30 choices, and the file grows with every model and machine measured: parsing it on every lookup
# cost more than a small model's whole request.
_parsed: dict[Path, tuple[tuple[int, int, int], dict]] = {}


def _read_cache(path: Path) -> dict:
    """The cache's contents, parsed again only when the file changed (shared: do not modify)."""
    try:
        stat = path.stat()
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # a write replaces the file (_write_cache)
        parsed = _parsed.get(path)
        if parsed is not None and parsed[0] == version:
            return parsed[1]
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a missing or damaged cache only means measuring again
    data = data if isinstance(data, dict) else {}
    _parsed[path] = (version, data)
    return data


def _write_cache(path: Path, full_key: str, choice: KernelChoice) -> None:
    data = dict(_read_cache(path))
    data[full_key] = {"name": choice.name, "milliseconds": choice.milliseconds}
    if choice.candidates:
        data[full_key]["candidates"] = list(choice.candidates)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)  # atomic: concurrent processes never read half a file
    except OSError:
        pass  # a read-only home still works, it only measures every time
