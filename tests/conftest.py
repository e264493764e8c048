import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

# Two cores: keep torch from oversubscribing them when tests run alongside other work.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded default model (loaded once per test session)."""
    from selfspec import load_model

    return load_model()
