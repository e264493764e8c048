"""The errors a user can cause and fix (bad input, a model or profile that cannot be used, a missing
file): front ends show these as one line, never as a traceback."""

from selfspec.models.loading import ModelLoadError
from selfspec.profiles.schema import ProfileError

USER_ERRORS = (ValueError, ModelLoadError, ProfileError, OSError)
