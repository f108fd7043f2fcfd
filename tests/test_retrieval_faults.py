"""A retrieval server that misbehaves must not hold a rollout: every request has a total
deadline; a server's reading of Search-R1's `return_scores` flag is exact."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from selftrain.retrieval import (
    BM25Retriever,
    HTTPRetriever,
    RetrieverError,
    RetrieverUnavailable,
    make_server,
)


class Drip(BaseHTTPRequestHandler):
    """Answers every POST with a valid body, one byte per second."""

    def do_POST(self):  # http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"result": [[]]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for byte in body:
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return
            time.sleep(1.0)

    def log_message(self, *args):
        pass


def serve(handler) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/retrieve"


def test_a_server_that_drips_its_answer_is_cut_at_the_deadline():
    server, url = serve(Drip)
    try:
        start = time.monotonic()
        with pytest.raises(RetrieverUnavailable, match="1 attempts .*deadline 3"):
            HTTPRetriever(url, timeout_s=3, retries=0).search(["anything"], 1)
        assert time.monotonic() - start < 6  # one socket read never took > 1 s: old client hung
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus") / "c.jsonl"
    corpus.write_text(json.dumps({"id": "d1", "title": "Lumo", "text": "Lumo is a city."}) + "\n")
    server = make_server(BM25Retriever(corpus), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/retrieve"
    server.shutdown()
    server.server_close()


def ask(url: str, return_scores) -> tuple[int, dict]:
    body = json.dumps({"queries": ["lumo"], "topk": 1, "return_scores": return_scores}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.parametrize("flag, scored", [(True, True), (False, False), ("true", True),
                                          ("false", False), ("False", False), (0, False)])
def test_return_scores_is_read_as_what_it_says(served, flag, scored):
    status, answer = ask(served, flag)
    (item,) = answer["result"][0]
    assert status == 200 and ("score" in item) is scored


def test_a_return_scores_that_is_no_boolean_is_a_bad_request(served):
    status, answer = ask(served, "maybe")
    assert status == 400 and "return_scores" in answer["error"]
    with pytest.raises(RetrieverError, match="HTTP 404"):  # a 4xx is not retried
        HTTPRetriever(served.replace("/retrieve", "/nowhere"), retries=0).search(["x"], 1)
