"""selfspec: lossless self-speculative decoding (Draft & Verify) for Hugging Face causal LMs."""

from .adaptive import AdaptiveThreshold, FixedThreshold
from .architectures import SUPPORTED_MODEL_TYPES, UnsupportedModelError
from .decoding import DraftSettings, autoregressive, self_speculative
from .draft import DraftModel
from .generate import GenerationResult, generate
from .models import DEFAULT_MODEL_ID, LanguageModel, ModelLoadError, load_model
from .profile import ProfileError, SkipProfile, read_profile, write_profile
from .records import StepRecord, Summary, summarize
from .sampling import Sampling

__all__ = [
    "AdaptiveThreshold", "FixedThreshold", "SUPPORTED_MODEL_TYPES", "UnsupportedModelError",
    "DraftSettings", "autoregressive", "self_speculative", "DraftModel", "GenerationResult", "generate",
    "DEFAULT_MODEL_ID", "LanguageModel", "ModelLoadError", "load_model", "ProfileError", "SkipProfile",
    "read_profile", "write_profile", "StepRecord", "Summary", "summarize", "Sampling",
]
