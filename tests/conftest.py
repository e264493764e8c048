import threading

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


# --- the web app, shared by the API tests (test_app.py) and the browser tests (test_browser.py) ---


@pytest.fixture(scope="module")
def app_module():
    # float32, the exact dtype, whatever this CPU measures: these tests check token identity. The paper's
    # full-weight draft, so an uploaded profile is raced as uploaded (auto may leave its skips out).
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SELFSPEC_DTYPE", "float32")
        env.setenv("SELFSPEC_DRAFT_WEIGHTS", "full")
        import app

        yield app


@pytest.fixture(scope="module")
def app_url(app_module):
    app_module.start_up()  # what app.main() does before serving
    _, url, _ = app_module.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield url
    app_module.demo.close()


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


@pytest.fixture
def solo(app_module):
    """The app model's own greedy tokens for a prompt, decoded alone (what both lanes must match)."""
    from selfspec.generate import generate

    def tokens(prompt: str, max_new_tokens: int) -> list[int]:
        return generate(app_module.get_model(None), prompt, None, max_new_tokens).token_ids

    return tokens


@pytest.fixture
def race_closed(app_module, monkeypatch):
    """An event set when a race the app starts from now on has closed both of its decoders."""
    closed = threading.Event()
    start_race = app_module.start_race

    def watched(*args, **kwargs):
        race = start_race(*args, **kwargs)

        def steps():
            try:
                yield from race
            finally:
                race.close()
                closed.set()

        return steps()

    monkeypatch.setattr(app_module, "start_race", watched)
    return closed


@pytest.fixture
def quiet_machine(monkeypatch):
    """A machine whose load average says nothing else runs: what the tests beside this one do must not
    decide whether a measured choice is cached."""
    import selfspec.engine.kernels as kernels

    monkeypatch.setattr(kernels.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
