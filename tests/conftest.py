import threading

import pytest
import torch


# Tests check behaviour, not speed: one thread is fastest for the tiny models and keeps the
# suite from oversubscribing a 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded default model (loaded once per test session)."""
    from selfspec import load_model

    return load_model()


# --- the web app, shared by the API tests (test_app.py) and the browser tests (test_browser.py) ---


@pytest.fixture(scope="module")
def app_module():
    import app

    return app


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
