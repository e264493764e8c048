"""selfspec: lossless self-speculative decoding (Draft & Verify) for Hugging Face causal LMs."""

from selfspec.engine.adaptive import AdaptiveThreshold, FixedThreshold
from selfspec.engine.architectures import SUPPORTED_MODEL_TYPES, UnsupportedModelError
from selfspec.engine.decoding import autoregressive, self_speculative
from selfspec.engine.settings import DraftSettings
from selfspec.engine.draft import DraftModel
from selfspec.generate import GenerationResult, generate
from selfspec.models.loading import DEFAULT_MODEL_ID, LanguageModel, ModelLoadError, load_model
from selfspec.profiles.schema import ProfileError, SkipProfile, read_profile, write_profile
from selfspec.engine.metrics import Summary, summarize
from selfspec.engine.records import StepRecord
from selfspec.engine.sampling import Sampling

__all__ = [
    "AdaptiveThreshold", "FixedThreshold", "SUPPORTED_MODEL_TYPES", "UnsupportedModelError",
    "DraftSettings", "autoregressive", "self_speculative", "DraftModel", "GenerationResult", "generate",
    "DEFAULT_MODEL_ID", "LanguageModel", "ModelLoadError", "load_model", "ProfileError", "SkipProfile",
    "read_profile", "write_profile", "StepRecord", "Summary", "summarize", "Sampling",
]
