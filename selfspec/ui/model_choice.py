"""Which models the app offers and keeps loaded: the embedded default, the owner's preset, typed Hub ids.

The preset is SELFSPEC_MODELS (comma-separated Hub ids or local directories), else the `models:` list
of the Space's front matter (README.md beside app.py). On a GPU the first preset model is the default
choice; on the CPU the embedded SmolLM2-135M stays the default (a 7B model crawls there). Before any
download, a preset Hub id must fit the device and a typed one must also pass the guard's limits
(models/guard.py). At most `keep` models stay loaded, so typed ids cannot fill the memory.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, ContextManager

from selfspec.engine.draft import DraftModel
from selfspec.engine.settings import DraftSettings
from selfspec.models.guard import check_typed_model
from selfspec.models.loading import DEFAULT_MODEL_ID, LanguageModel, load_model
from selfspec.engine.compiled import compile_setting
from selfspec.engine.host import compile_allowed
from selfspec.models.placement import choose_placement
from selfspec.profiles.schema import SkipProfile
from selfspec.ui.draft_choice import draft_weights, make_draft

DEFAULT_LABEL = "SmolLM2-135M-Instruct (embedded default)"
KEEP_LOADED = 2  # the default choice and one other


def front_matter_models(readme: Path) -> list[str]:
    """The `models:` list of a Space's YAML front matter (empty when there is none)."""
    import yaml

    try:
        text = readme.read_text(encoding="utf-8")
    except OSError:
        return []
    if not text.startswith("---"):
        return []
    try:
        header = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return []
    models = header.get("models") if isinstance(header, dict) else None
    return [str(m) for m in models] if isinstance(models, list) else []


def preset_models(readme: Path) -> list[str]:
    """The models the deployment's owner lists: SELFSPEC_MODELS, else the front matter's (embedded default left out)."""
    listed = os.environ.get("SELFSPEC_MODELS")
    names = [m.strip() for m in listed.split(",")] if listed is not None else front_matter_models(readme)
    return [m for m in dict.fromkeys(names) if m and m != DEFAULT_MODEL_ID]


def default_choice(presets: list[str]) -> str:
    """The first preset model on a GPU; the embedded default on the CPU."""
    on_gpu = choose_placement().device.startswith("cuda")
    return presets[0] if on_gpu and presets else DEFAULT_LABEL


def model_name(choice: str) -> str | None:
    """The name to load for a dropdown value; None for the embedded default."""
    choice = (choice or "").strip()
    return None if choice in ("", DEFAULT_LABEL, DEFAULT_MODEL_ID) else choice


class ModelShelf:
    """Loaded models by choice: checked before loading, the least recently used dropped beyond `keep`.

    A dropped model stays alive while a race still holds it; it is freed when that race ends.
    """

    def __init__(self, presets: list[str], pinned: str, prepare: Callable[[LanguageModel], None] = lambda lm: None,
                 keep: int = KEEP_LOADED) -> None:
        self.presets, self.prepare, self.keep = presets, prepare, keep
        self.pinned = model_name(pinned) or DEFAULT_MODEL_ID  # never dropped: the default choice
        self._models: OrderedDict[str, LanguageModel] = OrderedDict()
        self._drafts: dict[str, OrderedDict[tuple, tuple[DraftModel, str]]] = {}  # per model: its latest drafts
        self._lock = threading.Lock()

    def get(self, choice: str) -> LanguageModel:
        name = model_name(choice)
        key = name or DEFAULT_MODEL_ID
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            if name is not None:
                self.check(name)
            lm = load_model(name)
            self.prepare(lm)
            self._models[key] = lm
            for old in [k for k in self._models if k not in (key, self.pinned)][: max(0, len(self._models) - self.keep)]:
                del self._models[old]
                self._drafts.pop(old, None)  # its drafts go with it
            return lm

    def draft(self, lm: LanguageModel, profile: SkipProfile, settings: DraftSettings,
              device_lock: ContextManager | None = None) -> tuple[DraftModel, str]:
        """The draft for a loaded model and profile (ui/draft_choice.py), built once; the last `keep` per model kept."""
        weights = draft_weights(settings)
        key = (profile.attn, profile.mlp, weights, settings.max_draft if weights == "auto" else None)
        with self._lock:
            drafts = self._drafts.setdefault(lm.name, OrderedDict())
            if key in drafts and drafts[key][0].model is lm.model:
                drafts.move_to_end(key)
                return drafts[key]
            drafts[key] = made = make_draft(lm, profile, weights, settings.max_draft, device_lock)
            while len(drafts) > self.keep:
                drafts.popitem(last=False)
            return made

    def check(self, name: str) -> None:
        """A listed local directory loads as is; any Hub id is checked first (ModelRefused says why not)."""
        preset = name in self.presets
        if preset and Path(name).expanduser().is_dir():
            return
        check_typed_model(name, choose_placement(), preset=preset)

    @property
    def loaded(self) -> list[str]:
        return list(self._models)


def device_note(lm: LanguageModel) -> str:
    """One line for the page: the precision and why, and eager when compiling is wanted but not allowed here."""
    placement = f"Runs in {lm.placement}." if lm.placement else ""
    refused = compile_allowed(lm.device) if compile_setting(None, lm.device) else None
    return placement + (f" Eager, not compiled: {refused}." if refused else "")
