"""Skip profiles: which attention and MLP sublayers the draft bypasses.

A profile is plain JSON data (never pickle, never code):
    {"model": "<id or name>", "num_layers": L, "attn": [i, ...], "mlp": [j, ...]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ProfileError(ValueError):
    """A skip profile is malformed or does not fit the model it is used with."""


@dataclass(frozen=True)
class SkipProfile:
    num_layers: int
    attn: tuple[int, ...] = ()
    mlp: tuple[int, ...] = ()
    model: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

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

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "num_layers": self.num_layers, "attn": list(self.attn),
                "mlp": list(self.mlp), **self.metadata}

    @classmethod
    def from_dict(cls, data: Any) -> "SkipProfile":
        if not isinstance(data, dict):
            raise ProfileError(f"a profile must be a JSON object, got {type(data).__name__}")
        missing = [k for k in ("num_layers", "attn", "mlp") if k not in data]
        if missing:
            raise ProfileError(f"profile is missing field(s): {', '.join(missing)}")
        model = data.get("model", "")
        if not isinstance(model, str):
            raise ProfileError(f"model must be a string, got {model!r}")
        extra = {k: v for k, v in data.items() if k not in ("model", "num_layers", "attn", "mlp")}
        return cls(num_layers=data["num_layers"], attn=data["attn"], mlp=data["mlp"], model=model, metadata=extra)


def parse_profile(text: str) -> SkipProfile:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(f"profile is not valid JSON: {exc}") from None
    return SkipProfile.from_dict(data)


def read_profile(path: str | Path) -> SkipProfile:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror or exc}") from None
    return parse_profile(text)


def write_profile(profile: SkipProfile, path: str | Path) -> None:
    Path(path).write_text(json.dumps(profile.to_dict(), indent=2) + "\n", encoding="utf-8")


def parse_layer_list(text: str | None) -> list[int]:
    """'3,5,7' -> [3, 5, 7]; '' or None -> []."""
    if not text:
        return []
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ProfileError(f"layer list must be comma-separated integers, got {text!r}") from None
