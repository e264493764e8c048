"""Skip profiles: which attention and MLP sublayers the draft bypasses (schema v1, see docs/PROFILES.md).

A profile is plain JSON data (never pickle, never code):
    {"schema_version": 1, "model": "<id or name>", "num_layers": L, "attn": [i, ...], "mlp": [j, ...],
     "decoding": {...}, "fingerprint": {...}, "search": {...}, "metadata": {...}}
Only `num_layers`, `attn` and `mlp` are required. A file without `schema_version` is read as the
pre-v1 format, whose extra top-level keys are kept as metadata.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from selfspec.engine.settings import DRAFT_WEIGHT_CHOICES, DraftSettings

SCHEMA_VERSION = 1
DRAFT_WEIGHTS = tuple(w for w in DRAFT_WEIGHT_CHOICES if w != "auto")  # what a search can measure
# What the search measured for each draft weights (search.weights.<weights>), all optional.
WEIGHTS_FIGURES = ("extra_bytes", "skipped_sublayers", "max_draft", "seconds_per_token", "speedup", "acceptance",
                   "draft_cost_ratio", "c", "predicted_acceptance", "predicted_speedup", "best_k")


class ProfileError(ValueError):
    """A skip profile is malformed or does not fit the model it is used with."""


# --- small validators: each returns the value or raises one clear sentence -----------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(where: str, value: Any, minimum: int = 0) -> int:
    if not _is_int(value) or value < minimum:
        raise ProfileError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return value


def _number(where: str, value: Any, low: float = 0.0, high: float = math.inf) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or not low <= value <= high:
        bounds = f"in [{low}, {high}]" if high != math.inf else f">= {low}"
        raise ProfileError(f"{where} must be a number {bounds}, got {value!r}")
    return float(value)


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ProfileError(f"{where} must be a string, got {value!r}")
    return value


def _optional(check, where: str, value: Any, *args):
    return None if value is None else check(where, value, *args)


def _object(where: str, data: Any, cls) -> dict[str, Any]:
    """`data` as a dict holding only the fields of dataclass `cls` (unknown keys are refused)."""
    if not isinstance(data, dict):
        raise ProfileError(f"{where} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProfileError(f"{where} has unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return data


def _plain_json(where: str, value: Any) -> Any:
    """Metadata must be JSON data: objects, lists, strings, numbers, booleans, null."""
    if isinstance(value, dict):
        for key, item in value.items():
            _text(f"{where} key", key)
            _plain_json(f"{where}.{key}", item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _plain_json(f"{where}[{i}]", item)
    elif not (value is None or isinstance(value, (str, bool, int)) or
              (isinstance(value, float) and math.isfinite(value))):
        raise ProfileError(f"{where} must be plain JSON data, got {type(value).__name__}")
    return value


# --- the optional parts of a v1 profile -----------------------------------------------------------


def _weights_figures(value: Any) -> dict[str, dict[str, Any]] | None:
    """search.weights: {draft weights: {figure: number or null, "note": text}} (see WEIGHTS_FIGURES)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProfileError(f"search.weights must be a JSON object, got {type(value).__name__}")
    for weights, row in value.items():
        if weights not in DRAFT_WEIGHTS:
            raise ProfileError(f"search.weights has unknown draft weights {weights!r}; known: {', '.join(DRAFT_WEIGHTS)}")
        if not isinstance(row, dict):
            raise ProfileError(f"search.weights.{weights} must be a JSON object, got {type(row).__name__}")
        for key, figure in row.items():
            if key == "note":
                _text(f"search.weights.{weights}.note", figure)
            elif key in WEIGHTS_FIGURES:
                _optional(_number, f"search.weights.{weights}.{key}", figure)
            else:
                raise ProfileError(f"search.weights.{weights} has unknown field {key!r}; "
                                   f"known: {', '.join(WEIGHTS_FIGURES)}, note")
    return value


def _decoding(data: Any) -> DraftSettings:
    """A profile's `decoding` part: the engine's settings the search measured the profile with."""
    try:
        return DraftSettings(**_object("decoding", data, DraftSettings))
    except ValueError as exc:
        raise ProfileError(f"decoding.{exc}") from None


@dataclass(frozen=True)
class Fingerprint:
    """What identifies the model a profile was searched on. `revision` is the Hub commit where known."""

    model_type: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    architecture: str | None = None
    revision: str | None = None

    def __post_init__(self) -> None:
        _text("fingerprint.model_type", self.model_type)
        _int("fingerprint.num_layers", self.num_layers, 1)
        _int("fingerprint.hidden_size", self.hidden_size, 1)
        _int("fingerprint.vocab_size", self.vocab_size, 1)
        _optional(_text, "fingerprint.architecture", self.architecture)
        _optional(_text, "fingerprint.revision", self.revision)

    @classmethod
    def from_dict(cls, data: Any) -> "Fingerprint":
        data = _object("fingerprint", data, cls)
        missing = [f.name for f in fields(cls) if f.name not in data and f.default is not None]
        if missing:
            raise ProfileError(f"fingerprint is missing field(s): {', '.join(missing)}")
        return cls(**data)

    def differences(self, other: "Fingerprint") -> list[str]:
        """Structural differences ('field: ours vs theirs'). A different revision of the same shape is
        the same model as far as a skip set goes, so revisions are recorded but not compared."""
        return [f"{name}: {getattr(self, name)} vs {getattr(other, name)}"
                for name in ("model_type", "num_layers", "hidden_size", "vocab_size")
                if getattr(self, name) != getattr(other, name)]


def fingerprint(model) -> Fingerprint:
    """The fingerprint of a loaded transformers model (its config, plus the Hub commit if known)."""
    config = model.config
    architectures = getattr(config, "architectures", None) or [type(model).__name__]
    return Fingerprint(
        model_type=str(config.model_type),
        num_layers=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
        vocab_size=int(config.vocab_size),
        architecture=str(architectures[0]),
        revision=getattr(config, "_commit_hash", None),
    )


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?$")


@dataclass(frozen=True)
class SearchInfo:
    """How the profile was found and what it measured, all in one run on one machine."""

    method: str  # "bayes", "greedy", or e.g. "published" for a skip set copied from a paper's release
    trials: int | None = None  # objective evaluations (end-to-end timings)
    seconds: float | None = None  # wall time the search spent
    calibration: str | None = None  # "builtin" or the file the prompts came from
    objective: float | None = None  # seconds per generated token of draft-and-verify (greedy)
    acceptance: float | None = None  # drafts accepted / drafted
    mean_accepted_tokens: float | None = None  # tokens committed per verification
    draft_cost_ratio: float | None = None  # seconds per draft token / seconds per autoregressive token
    speedup: float | None = None  # autoregressive seconds per token / objective, same run
    device: str | None = None
    dtype: str | None = None
    versions: dict[str, str] = field(default_factory=dict)  # library -> version
    date: str | None = None  # ISO 8601
    complete: bool = True  # False: interrupted, best found so far
    weights: dict[str, dict[str, Any]] | None = None  # per draft weights: what the search measured and predicted

    def __post_init__(self) -> None:
        if not self.method or not isinstance(self.method, str):
            raise ProfileError(f"search.method must be a non-empty string, got {self.method!r}")
        _optional(_int, "search.trials", self.trials)
        _optional(_number, "search.seconds", self.seconds)
        _optional(_text, "search.calibration", self.calibration)
        _optional(_number, "search.objective", self.objective)
        _optional(_number, "search.acceptance", self.acceptance, 0.0, 1.0)
        _optional(_number, "search.mean_accepted_tokens", self.mean_accepted_tokens)
        _optional(_number, "search.draft_cost_ratio", self.draft_cost_ratio)
        if self.speedup is not None and _number("search.speedup", self.speedup) <= 0:
            raise ProfileError(f"search.speedup must be positive, got {self.speedup!r}")
        _optional(_text, "search.device", self.device)
        _optional(_text, "search.dtype", self.dtype)
        if not isinstance(self.versions, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.versions.items()):
            raise ProfileError(f"search.versions must map library names to version strings, got {self.versions!r}")
        if self.date is not None and not _DATE.match(_text("search.date", self.date)):
            raise ProfileError(f"search.date must be an ISO 8601 date, got {self.date!r}")
        if not isinstance(self.complete, bool):
            raise ProfileError(f"search.complete must be true or false, got {self.complete!r}")
        _weights_figures(self.weights)

    @classmethod
    def from_dict(cls, data: Any) -> "SearchInfo":
        data = _object("search", data, cls)
        if "method" not in data:
            raise ProfileError("search is missing field(s): method")
        return cls(**data)


# --- the profile ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkipProfile:
    num_layers: int
    attn: tuple[int, ...] = ()
    mlp: tuple[int, ...] = ()
    model: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    decoding: DraftSettings | None = field(default=None, compare=False)
    fingerprint: Fingerprint | None = field(default=None, compare=False)
    search: SearchInfo | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.num_layers, int) or isinstance(self.num_layers, bool) or self.num_layers < 1:
            raise ProfileError(f"num_layers must be a positive integer, got {self.num_layers!r}")
        for kind in ("attn", "mlp"):
            indices = getattr(self, kind)
            if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
                raise ProfileError(f"{kind} must be a list of layer indices, got {indices!r}")
            indices = tuple(indices)
            for i in indices:
                if not isinstance(i, int) or isinstance(i, bool):
                    raise ProfileError(f"{kind} holds a non-integer layer index: {i!r}")
                if not 0 <= i < self.num_layers:
                    raise ProfileError(f"{kind} layer index {i} is out of range 0..{self.num_layers - 1}")
            if len(set(indices)) != len(indices):
                dupes = sorted({i for i in indices if indices.count(i) > 1})
                raise ProfileError(f"{kind} lists layer indices more than once: {dupes}")
            object.__setattr__(self, kind, tuple(sorted(indices)))
        _text("model", self.model)
        if not isinstance(self.metadata, dict):
            raise ProfileError(f"metadata must be a JSON object, got {type(self.metadata).__name__}")
        _plain_json("metadata", self.metadata)
        for name, cls in (("decoding", DraftSettings), ("fingerprint", Fingerprint), ("search", SearchInfo)):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), cls):
                raise ProfileError(f"{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        if self.fingerprint is not None and self.fingerprint.num_layers != self.num_layers:
            raise ProfileError(f"fingerprint.num_layers ({self.fingerprint.num_layers}) "
                               f"differs from num_layers ({self.num_layers})")

    @classmethod
    def none(cls, num_layers: int, model: str = "") -> "SkipProfile":
        """Skip nothing: the draft is the full model."""
        return cls(num_layers=num_layers, model=model)

    @property
    def skipped_sublayers(self) -> int:
        return len(self.attn) + len(self.mlp)

    def check_fits(self, num_layers: int) -> None:
        if self.num_layers != num_layers:
            raise ProfileError(
                f"profile is for a model with {self.num_layers} layers ({self.model or 'unnamed'}), "
                f"but this model has {num_layers}"
            )

    def check_model(self, model, force: bool = False) -> None:
        """Refuse a profile searched on another model (by fingerprint) unless `force`.

        The layer count must match even when forced: indices beyond the model cannot be skipped.
        """
        self.check_fits(int(model.config.num_hidden_layers))
        if self.fingerprint is None or force:
            return
        differences = self.fingerprint.differences(fingerprint(model))
        if differences:
            raise ProfileError(
                f"profile was searched on another model ({self.model or 'unnamed'}; "
                f"{'; '.join(differences)}, profile vs model); use --force-profile to use it anyway"
            )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "model": self.model,
                                "num_layers": self.num_layers, "attn": list(self.attn), "mlp": list(self.mlp)}
        for name in ("decoding", "fingerprint", "search"):
            if getattr(self, name) is not None:
                data[name] = {k: v for k, v in asdict(getattr(self, name)).items() if v is not None}
        if self.metadata:
            data["metadata"] = dict(self.metadata)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "SkipProfile":
        if not isinstance(data, dict):
            raise ProfileError(f"a profile must be a JSON object, got {type(data).__name__}")
        missing = [k for k in ("num_layers", "attn", "mlp") if k not in data]
        if missing:
            raise ProfileError(f"profile is missing field(s): {', '.join(missing)}")
        if "schema_version" not in data:  # pre-v1: extra top-level keys were free metadata
            extra = {k: v for k, v in data.items() if k not in ("model", "num_layers", "attn", "mlp")}
            return cls(num_layers=data["num_layers"], attn=data["attn"], mlp=data["mlp"],
                       model=data.get("model", ""), metadata=extra)
        version = data["schema_version"]
        if version != SCHEMA_VERSION:
            raise ProfileError(f"profile schema_version {version!r} is not supported (this version reads {SCHEMA_VERSION})")
        known = {"schema_version", "model", "num_layers", "attn", "mlp", "decoding", "fingerprint", "search", "metadata"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ProfileError(f"profile has unknown field(s) {', '.join(unknown)}; put free-form data under 'metadata'")
        parts = {name: (None if data.get(name) is None else read(data[name]))
                 for name, read in (("decoding", _decoding), ("fingerprint", Fingerprint.from_dict),
                                    ("search", SearchInfo.from_dict))}
        try:
            return cls(num_layers=data["num_layers"], attn=data["attn"], mlp=data["mlp"],
                       model=data.get("model", ""), metadata=data.get("metadata", {}), **parts)
        except TypeError as exc:  # e.g. a non-hashable value where a number belongs
            raise ProfileError(f"profile has a field of the wrong type: {exc}") from None


def parse_profile(text: str) -> SkipProfile:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(f"profile is not valid JSON: {exc}") from None
    return SkipProfile.from_dict(data)


def read_profile(path: str | Path, max_bytes: int | None = None) -> SkipProfile:
    """A profile from a JSON file; `max_bytes` refuses larger files unread (an upload from the public)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise ProfileError(f"profile {path.name} is {size / 1024:.1f} KiB; at most {max_bytes / 1024:.0f} KiB "
                               f"is accepted (a skip profile is a few KB of JSON)")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ProfileError(f"profile {path} is not UTF-8 text (profiles are JSON)") from None
    try:
        return parse_profile(text)
    except ProfileError as exc:
        raise ProfileError(f"{path}: {exc}") from None


def dumps(profile: SkipProfile) -> str:
    """Indented JSON with each layer list on one line (easy to read and to diff)."""
    text = json.dumps(profile.to_dict(), indent=2)
    return re.sub(r"\[\s+(-?\d+(?:,\s+-?\d+)*)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)


def write_profile(profile: SkipProfile, path: str | Path) -> None:
    """Write atomically, so that an interrupted writer never leaves half a file."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(dumps(profile) + "\n", encoding="utf-8")
    partial.replace(path)


def profile_filename(model_name: str) -> str:
    """'HuggingFaceTB/SmolLM2-135M-Instruct' -> 'HuggingFaceTB--SmolLM2-135M-Instruct.json' (also the Hub layout)."""
    if Path(model_name).exists():  # a local directory or file: its own name
        return Path(model_name).stem + ".json"
    return model_name.strip("/").replace("/", "--") + ".json"
