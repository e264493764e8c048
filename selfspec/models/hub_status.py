"""Whether the Hugging Face Hub can be asked, decided the same way everywhere (models and profiles).

Both settings are read at call time: huggingface_hub reads HF_HUB_OFFLINE and HF_ENDPOINT once, at
import, but a user or a test may set them later in the same process.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

TRUE = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE is set (as the library reads it: 1/true/yes/on)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE


def hub_endpoint() -> str | None:
    """The endpoint to pass to huggingface_hub calls (None: the library's default)."""
    return os.environ.get("HF_ENDPOINT") or None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint accepts a connection (never when offline)."""
    from huggingface_hub import constants

    if hub_offline():
        return False
    url = urlparse(hub_endpoint() or constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False
