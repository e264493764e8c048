import pytest
import torch


# Tests check behaviour, not speed: one thread is fastest for the tiny models and keeps the
# suite from oversubscribing a 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded default model in float32 (loaded once per test session)."""
    from selfspec import load_model

    return load_model(dtype="float32", device="cpu")


@pytest.fixture
def loopback_hub(tmp_path, monkeypatch):
    """A loopback Hub (tests/hub_server.py) for the real huggingface_hub client, with HF_HOME, the client's
    cache and its token isolated in tmp; writes need the token "secret-token"."""
    from huggingface_hub import constants

    from hub_server import HubServer

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "secret-token")
    with HubServer(token="secret-token") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server
