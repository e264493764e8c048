"""The app under load, as a Space runs it: `python app.py` in its own process, driven through the queue.

8 gradio_client sessions send 3 requests each at the same time to a tiny model listed in
SELFSPEC_MODELS (a local save_pretrained directory), so the test measures the app, not the model.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tiny_models import save_tiny

ROOT = Path(__file__).parent.parent
SESSIONS, REQUESTS = 8, 3
PROMPTS = ["The sky is", "Once upon a time", "def add(a, b):", "Bonjour, je", "1, 2, 3,"]
NEW_TOKENS = 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resident_bytes(pid: int) -> int:
    """The process's resident memory, from /proc (the second field of statm counts pages)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """app.py serving a tiny preset model; yields (url, process, model dir, profile path)."""
    tmp = tmp_path_factory.mktemp("load")
    model_dir = save_tiny(tmp / "tiny-llama")
    profile = tmp / "profile.json"
    profile.write_text('{"num_layers": 4, "attn": [1], "mlp": [2]}')
    port = free_port()
    env = {**os.environ, "SELFSPEC_MODELS": str(model_dir), "SELFSPEC_DTYPE": "float32", "SELFSPEC_DRAFT_WEIGHTS": "",
           "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(tmp / "app.log", "w")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("app.py did not start:\n" + (tmp / "app.log").read_text()[-3000:])
            time.sleep(0.5)
    yield url, process, model_dir, profile
    process.terminate()
    process.wait(timeout=30)
    log.close()


def request(model_dir, prompt, profile=None):
    from gradio_client import handle_file

    return dict(prompt=prompt, model=str(model_dir), profile_file=handle_file(str(profile)) if profile else None,
                max_new_tokens=NEW_TOKENS, mode="greedy", temperature=0.7, top_p=0.9, seed=0, max_draft=4,
                adaptive=True)


def run_and_watch(client, arguments) -> tuple[dict, list[int]]:
    """Submit one request; poll its status for queue positions until it ends; return its result and positions."""
    job = client.submit(**arguments, api_name="/compare")
    positions = []
    while not job.done():
        status = job.status()
        if status.rank is not None:
            positions.append(status.rank)
        time.sleep(0.01)
    return job.result(timeout=60)[7], positions


def test_eight_sessions_at_once_get_their_solo_outputs_and_memory_returns(served):
    from gradio_client import Client

    url, process, model_dir, profile = served
    # Solo runs first, one at a time: each request's expected output, and the app warmed up on every path.
    solo = {}
    client = Client(url, verbose=False)
    for i, prompt in enumerate(PROMPTS):
        for upload in (None, profile):
            result, _ = run_and_watch(client, request(model_dir, prompt, upload))
            assert result["identical"] is True, prompt
            solo[prompt, upload] = result["autoregressive"]["token_ids"]
    assert len({tuple(ids) for ids in solo.values()}) > 1, "the prompts must give different outputs"
    before = resident_bytes(process.pid)

    outcomes, errors = [], []

    def session(index: int) -> None:
        try:
            me = Client(url, verbose=False)  # one session per visitor
            for r in range(REQUESTS):
                prompt = PROMPTS[(index + r) % len(PROMPTS)]
                upload = profile if (index + r) % 2 else None
                result, positions = run_and_watch(me, request(model_dir, prompt, upload))
                outcomes.append((prompt, upload, result, positions))
        except Exception as exc:  # reported below with the session's number
            errors.append(f"session {index}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=session, args=(i,)) for i in range(SESSIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    assert len(outcomes) == SESSIONS * REQUESTS
    for prompt, upload, result, _ in outcomes:
        assert result["autoregressive"]["token_ids"] == solo[prompt, upload], prompt
        assert result["self_speculative"]["token_ids"] == solo[prompt, upload], prompt
        assert result["draft"]["weights"] in ("full", "int8", "int4")  # the automatic choice (the default)
    # One job on the device at a time: requests waited in the queue, and were told where they stood.
    assert max(max(p, default=0) for *_, p in outcomes) >= 1
    time.sleep(2.0)  # the last responses finish streaming
    after = resident_bytes(process.pid)
    assert after <= 1.10 * before, f"resident memory {before / 2**20:.0f} MiB before the load, {after / 2**20:.0f} after"


def test_oversized_and_malformed_profile_uploads_are_refused(served, tmp_path):
    from gradio_client import Client

    url, _, model_dir, _ = served
    client = Client(url, verbose=False)
    big = tmp_path / "big.json"
    big.write_text('{"num_layers": 4, "attn": [], "mlp": [], "metadata": {"pad": "' + "x" * 100_000 + '"}}')
    with pytest.raises(Exception, match="(?i)size|KiB|large"):
        client.predict(**request(model_dir, "Hi", big), api_name="/compare")
    broken = tmp_path / "broken.json"
    broken.write_text('{"num_layers": 4, "attn": [1,')
    with pytest.raises(Exception, match="not valid JSON"):
        client.predict(**request(model_dir, "Hi", broken), api_name="/compare")
    # The app still serves afterwards.
    assert client.predict(**request(model_dir, PROMPTS[0]), api_name="/compare")[7]["identical"] is True
