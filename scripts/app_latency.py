"""Time from a Run request to the first streamed tokens in the web app (embedded model, start-up excluded).

Launches app.py in this process, then sends the same request several times through gradio_client and
prints a table. Run it alone on the machine: `flock /tmp/selfspec-timing.lock python scripts/app_latency.py`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--prompt", default="Summarise in two sentences why the sky is blue.")
    args = parser.parse_args()

    import app
    from gradio_client import Client

    app.start_up()
    _, url, _ = app.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    client = Client(url, verbose=False)
    request = dict(prompt=args.prompt, model=app.DEFAULT_LABEL, profile_file=None,
                   max_new_tokens=args.max_new_tokens, mode="greedy", temperature=0.7, top_p=0.9, seed=0,
                   max_draft=4, adaptive=True)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| rep | first tokens (s) | whole race (s) | AR tok/s | self-spec tok/s |")
    print("| --- | --- | --- | --- | --- |")
    firsts = []
    for rep in range(args.reps):
        start = time.perf_counter()
        job = client.submit(**request, api_name="/compare")
        next(job)  # the first streamed update
        first = time.perf_counter() - start
        result = job.result()[7]
        total = time.perf_counter() - start
        firsts.append(first)
        print(f"| {rep} | {first:.3f} | {total:.2f} | {result['autoregressive']['tokens_per_second']:.1f} | "
              f"{result['self_speculative']['tokens_per_second']:.1f} |")
    print(f"median first tokens: {statistics.median(firsts):.3f} s over {args.reps} reps; "
          f"load average after: {os.getloadavg()[0]:.2f}")
    app.demo.close()


if __name__ == "__main__":
    main()
