"""A real HTTP server on loopback that speaks the OpenAI API (GET /models, POST
/completions and /chat/completions) for the served-critic tests. What it answers is the
`judge` it is given (prompt -> the model's text); marker words in a prompt make it misbehave
(see `Handler`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "critic-model"


class Handler(BaseHTTPRequestHandler):
    """Answers like an OpenAI-compatible server; a marker word in the prompt picks a fault:
    DRIP (the body one byte at a time, for ever), FLAKY (HTTP 500 the first `server.flaky`
    times), BADJSON (a body that is not JSON), GIBBERISH (JSON whose text has no verdict)."""

    protocol_version = "HTTP/1.1"
    server: FakeOpenAI

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.server.key and self.headers.get("Authorization") != f"Bearer {self.server.key}":
            return self.reply(401, b'{"error": "bad key"}')
        self.reply(200, json.dumps({"object": "list", "data": [{"id": MODEL}]}).encode())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.path, body, self.headers.get("Authorization")))
        with self.server.lock:
            self.server.inflight += 1
            self.server.max_inflight = max(self.server.max_inflight, self.server.inflight)
        try:
            self.answer(body)
        finally:
            with self.server.lock:
                self.server.inflight -= 1

    def answer(self, body: dict) -> None:
        chat = self.path.endswith("/chat/completions")
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        if self.server.barrier is not None:
            self.server.barrier.wait()
        if "DRIP" in prompt:
            return self.drip()
        if "FLAKY" in prompt:
            with self.server.lock:
                self.server.flaky -= 1
                fail = self.server.flaky >= 0
            if fail:
                return self.reply(500, b'{"error": "overloaded"}')
        if "BADJSON" in prompt:
            return self.reply(200, b'{"choices": [{"text": "Step 1: corr')
        text = "I am not sure." if "GIBBERISH" in prompt else self.server.judge(prompt)
        choice = {"index": 0, "message": {"role": "assistant", "content": text}} if chat else \
            {"index": 0, "text": text}
        usage = {"prompt_tokens": len(prompt), "completion_tokens": len(text.split()),
                 "total_tokens": len(prompt) + len(text.split())}
        self.reply(200, json.dumps({"model": body["model"], "choices": [choice], "usage": usage}).encode())

    def drip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(300):  # 60 s, far past any deadline in these tests
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:  # the client gave up: what it should do
            pass


class FakeOpenAI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, judge: Callable[[str], str]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.judge = judge
        self.seen: list[tuple[str, dict, str | None]] = []
        self.lock = threading.Lock()
        self.inflight = self.max_inflight = 0
        self.flaky = 0
        self.key: str | None = None
        self.barrier: threading.Barrier | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@contextmanager
def serving(judge: Callable[[str], str]) -> Iterator[FakeOpenAI]:
    """A `FakeOpenAI` answering with `judge`, served from a thread while the block runs."""
    srv = FakeOpenAI(judge)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
