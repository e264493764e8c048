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
