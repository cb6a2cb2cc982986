"""A stand-in for `python -m llama_cpp.server` in the local-server tests (run as a child).

Serves the fake OpenAI-compatible server on 127.0.0.1:PORT; `--fail` exits at once with an
error message (a broken install), `--silent` never listens (a server that hangs at start).
"""

from __future__ import annotations

import argparse
import sys
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fake_openai import FakeOpenAI, _Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--silent", action="store_true")
    args = parser.parse_args()
    if args.fail:
        print("error: the model file is corrupt", flush=True)
        sys.exit(3)
    if args.silent:
        time.sleep(60)
        return
    handler = type("Handler", (_Handler,), {"fake": FakeOpenAI(explanation=" local words")})
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    print(f"listening on {args.port}", flush=True)
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
