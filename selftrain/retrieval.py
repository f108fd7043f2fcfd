"""Retrievers for search-agent tasks: one batched `search` interface, local BM25 or HTTP.

`BM25Retriever` indexes a JSONL corpus with `bm25s` and caches the index on disk; `serve` puts
any retriever behind the HTTP API of Search-R1's retrieval server (POST /retrieve), and
`HTTPRetriever` is the client of that API. Many rollout workers can so share one index, and a
Search-R1 server (dense e5 over wiki-18, ...) plugs in unchanged.

API (Search-R1, `search_r1/search/retrieval_server.py`):
  request   {"queries": ["q1", ...], "topk": 3, "return_scores": true}
  response  {"result": [[{"document": {"id": "12", "contents": "\\"Title\\"\\ntext"},
                          "score": 7.1}, ...], ...]}      one list per query, best first
Without `return_scores` each item is the document itself. `contents` is the wiki-18 form:
the title in double quotes on the first line, the text after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

DEFAULT_TOPK = 3
"""What the server answers when a request names no topk (Search-R1's default)."""


@dataclass(frozen=True)
class Doc:
    """One retrieved document. `score` is the retriever's own (BM25, cosine); higher is better."""

    id: str
    title: str
    text: str
    score: float = 0.0


class Retriever(Protocol):
    """Batched search: one call for all the queries a batch of rollouts issued in a turn."""

    def search(self, queries: list[str], topk: int) -> list[list[Doc]]:
        """Up to `topk` documents per query, best first; one list per query, in order."""
        ...


class RetrieverError(RuntimeError):
    """The retriever was reached but the exchange failed (bad request, malformed answer)."""


class RetrieverUnavailable(RetrieverError):
    """The retrieval server could not be reached after all retries."""


class CorpusError(ValueError):
    """A corpus file is missing or has a bad line; the message names the file and line."""


def split_contents(contents: str) -> tuple[str, str]:
    """(title, text) of a wiki-18 style `contents`: '"Title"\\ntext' (quotes optional)."""
    title, _, text = contents.partition("\n")
    return title.strip().strip('"'), text


def join_contents(title: str, text: str) -> str:
    return f'"{title}"\n{text}'


# ---------------------------------------------------------------- local BM25


def read_corpus(path: Path) -> tuple[list[Doc], str]:
    """The documents of a JSONL corpus and the file's sha256, in one pass over the file.

    A line is {"id", "title", "text"} or Search-R1's {"id", "contents"}. Blank lines are skipped;
    anything else that is wrong stops with the file and line number, since a silently dropped
    document would make a gold chain unretrievable with no trace of why.
    """
    if not path.is_file():
        raise CorpusError(f"corpus file {path} does not exist")
    digest = hashlib.sha256()
    docs: list[Doc] = []
    seen: dict[str, int] = {}
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            digest.update(raw)
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise CorpusError(f"{where}: not a JSON object ({err}); each line must be "
                                  f'{{"id": ..., "title": ..., "text": ...}}') from err
            if not isinstance(obj, dict):
                raise CorpusError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            if "id" not in obj:
                raise CorpusError(f"{where}: the document has no 'id'")
            if "title" in obj and "text" in obj:
                title, text = obj["title"], obj["text"]
            elif "contents" in obj:
                title, text = split_contents(str(obj["contents"]))
            else:
                raise CorpusError(f"{where}: a document needs 'title' and 'text' (or Search-R1's "
                                  f"'contents'); it has {sorted(obj)}")
            doc_id = str(obj["id"])
            if doc_id in seen:
                raise CorpusError(f"{where}: id {doc_id!r} was already used on line {seen[doc_id]}")
            seen[doc_id] = lineno
            docs.append(Doc(id=doc_id, title=str(title), text=str(text)))
    if not docs:
        raise CorpusError(f"corpus file {path} has no documents")
    return docs, digest.hexdigest()


def _tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


class BM25Retriever:
    """BM25 (bm25s) over a JSONL corpus; title and text are indexed together.

    The index is saved once under `<cache_dir or the corpus folder>/<corpus name>.bm25-<sha>`,
    keyed by the corpus file's sha256, so later runs (and every worker on a node) load it
    instead of re-indexing, and an edited corpus never meets a stale index. Documents with
    score 0 (no query term in common) are not returned, as with Search-R1's pyserini BM25.
    """

    def __init__(self, corpus_path: str | Path, cache_dir: str | Path | None = None) -> None:
        import bm25s

        self.corpus_path = Path(corpus_path).expanduser()
        self.docs, self.sha256 = read_corpus(self.corpus_path)
        root = Path(cache_dir).expanduser() if cache_dir else self.corpus_path.parent
        self.index_dir = root / f"{self.corpus_path.name}.bm25-{self.sha256[:16]}"
        if (self.index_dir / "selftrain_index.json").is_file():
            self._bm25 = bm25s.BM25.load(str(self.index_dir), show_progress=False)
        else:
            self._bm25 = self._build()
        self._lock = threading.Lock()  # one search at a time when a threaded server shares us

    def _build(self) -> Any:
        import bm25s

        bm25 = bm25s.BM25()
        bm25.index(_tokenize([f"{d.title} {d.text}" for d in self.docs]), show_progress=False)
        # Save under a private name, then rename: concurrent workers may build the same index,
        # and a reader must never load a half-written one.
        tmp = self.index_dir.with_name(f"{self.index_dir.name}.tmp-{os.getpid()}-{id(self)}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        bm25.save(str(tmp), show_progress=False)
        meta = {"corpus": str(self.corpus_path), "sha256": self.sha256, "docs": len(self.docs),
                "bm25s": bm25s.__version__}
        (tmp / "selftrain_index.json").write_text(json.dumps(meta, indent=2))
        try:
            tmp.rename(self.index_dir)
        except OSError:  # another process finished first: its index is the same
            shutil.rmtree(tmp, ignore_errors=True)
        return bm25

    def search(self, queries: list[str], topk: int) -> list[list[Doc]]:
        if topk < 1:
            raise ValueError(f"topk must be at least 1, got {topk}")
        if not queries:
            return []
        k = min(topk, len(self.docs))
        with self._lock:
            found, scores = self._bm25.retrieve(_tokenize(list(queries)), k=k, show_progress=False)
        out = []
        for row, row_scores in zip(found, scores):
            docs = []
            for i, s in zip(row, row_scores):
                if s > 0:
                    d = self.docs[int(i)]
                    docs.append(Doc(id=d.id, title=d.title, text=d.text, score=float(s)))
            out.append(docs)
        return out


# ---------------------------------------------------------------- HTTP client


class HTTPRetriever:
    """Client of a Search-R1 style retrieval server (`url` is the full endpoint, e.g.
    http://host:8000/retrieve).

    Every request must be answered in full within `timeout_s` (a total deadline, not a socket
    timeout: a server that drips its answer cannot hold a rollout). Connection failures,
    deadlines and 5xx answers are retried `retries` times with exponential backoff
    (`backoff_s`, 2x, 4x, ...); after that `RetrieverUnavailable` names the url, the attempts
    and the last error, so a dead or stalled server stops a rollout instead of hanging it. A 4xx
    answer or a malformed body is not retried: asking again would not help.
    """

    def __init__(self, url: str, timeout_s: float = 10.0, retries: int = 3,
                 backoff_s: float = 0.5) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"retriever url must start with http:// or https://, got {url!r}")
        self.url = url
        self.timeout_s = timeout_s
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        # A local server must not be sent through an HTTP(S)_PROXY set for the outside world.
        self._trust_env = not _is_loopback(urllib.parse.urlsplit(url).hostname or "")

    def search(self, queries: list[str], topk: int) -> list[list[Doc]]:
        import httpx

        from selftrain.http import post

        if not queries:
            return []
        body = json.dumps({"queries": list(queries), "topk": topk, "return_scores": True}).encode()
        attempts = self.retries + 1
        last: BaseException | str | None = None
        for attempt in range(1, attempts + 1):
            try:
                resp = post(self.url, body, self.timeout_s, trust_env=self._trust_env,
                            headers={"Content-Type": "application/json"})
            except (httpx.TransportError, TimeoutError) as err:
                last = err  # refused, reset, stalled, DNS: all worth another try
            else:
                if resp.status_code < 400:
                    return self._parse(resp.content, len(queries))
                if resp.status_code < 500:
                    raise RetrieverError(
                        f"retrieval server {self.url} rejected the request: HTTP "
                        f"{resp.status_code} {resp.text[:300]}")
                last = f"HTTP {resp.status_code} {resp.text[:300]}"
            if attempt < attempts:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        if isinstance(last, str):  # it answered, with an error of its own: it is running
            raise RetrieverUnavailable(
                f"retrieval server {self.url} is running but failing: it answered {last} to "
                f"each of {attempts} attempts; see the server's own log")
        raise RetrieverUnavailable(
            f"retrieval server {self.url} is unavailable after {attempts} attempts "
            f"(deadline {self.timeout_s}s each); last error: {last!r}. Is the server running "
            f"(`selftrain serve-retriever`)?")

    def _parse(self, raw: bytes, n: int) -> list[list[Doc]]:
        try:
            result = json.loads(raw)["result"]
            if not isinstance(result, list) or len(result) != n:
                raise ValueError(f"expected {n} result lists, got "
                                 f"{len(result) if isinstance(result, list) else type(result)}")
            return [[_doc_from_json(item) for item in items] for items in result]
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise RetrieverError(f"retrieval server {self.url} sent a malformed answer ({err!r}): "
                                 f"{raw[:300]!r}") from err


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _doc_from_json(item: dict[str, Any]) -> Doc:
    """One result item, with or without score; title/text from `contents` when absent."""
    doc = item["document"] if "document" in item else item
    if "title" in doc and "text" in doc:
        title, text = str(doc["title"]), str(doc["text"])
    else:
        title, text = split_contents(str(doc["contents"]))
    doc_id = str(doc["id"]) if doc.get("id") is not None else title  # Search-R1's BM25 has no id
    return Doc(id=doc_id, title=title, text=text, score=float(item.get("score", 0.0)))


def _doc_to_json(doc: Doc) -> dict[str, Any]:
    return {"id": doc.id, "title": doc.title, "text": doc.text,
            "contents": join_contents(doc.title, doc.text)}


# ---------------------------------------------------------------- HTTP server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many rollout workers connect at once; the default backlog is 5


def make_server(retriever: Retriever, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) answering POST /retrieve from `retriever`.

    Port 0 picks a free port (read it from `server.server_address`). Call `serve_forever()`,
    and `shutdown()` + `server_close()` from another thread to stop it.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's naming
            if self.path.rstrip("/") != "/retrieve":
                self._reply(404, {"error": f"unknown path {self.path}; POST /retrieve"})
                return
            try:
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                queries = req["queries"]
                if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
                    raise ValueError("'queries' must be a list of strings")
                topk = int(req.get("topk") or DEFAULT_TOPK)
                with_scores = _flag(req.get("return_scores", False), "return_scores")
            except (ValueError, KeyError, TypeError) as err:
                self._reply(400, {"error": f"bad request: {err!r}; expected "
                                           '{"queries": [...], "topk": k, "return_scores": true}'})
                return
            try:
                results = retriever.search(queries, topk)
            except Exception as err:  # the client gets the reason, we keep serving
                self._reply(500, {"error": f"retrieval failed: {err!r}"})
                return
            self._reply(200, {"result": [
                [{"document": _doc_to_json(d), "score": d.score} if with_scores else _doc_to_json(d)
                 for d in docs]
                for docs in results]})

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/health":
                self._reply(200, {"status": "ok"})
            else:
                self._reply(404, {"error": "POST /retrieve, or GET /health"})

        def _reply(self, code: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would drown the rollout logs

    return _Server((host, port), Handler)


def _flag(value: Any, name: str) -> bool:
    """A JSON boolean, also when a client sends it as a string ("false" must not mean true)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"'{name}' must be true or false, got {value!r}")


def serve(retriever: Retriever, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `retriever` over the Search-R1 API until interrupted (blocks)."""
    server = make_server(retriever, host, port)
    bound_host, bound_port = server.server_address[:2]
    print(f"retriever serving on http://{bound_host}:{bound_port}/retrieve", file=sys.stderr,
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def serve_main(corpus: str | Path, host: str = "127.0.0.1", port: int = 8000,
               cache_dir: str | Path | None = None) -> None:
    """`selftrain serve-retriever`: BM25 over `corpus`, shared by all rollout workers."""
    retriever = BM25Retriever(corpus, cache_dir=cache_dir)
    print(f"BM25 over {len(retriever.docs)} documents of {retriever.corpus_path} "
          f"(index {retriever.index_dir})", file=sys.stderr, flush=True)
    serve(retriever, host, port)


# ---------------------------------------------------------------- from config

_SPEC_KEYS = {
    "bm25": ({"corpus"}, {"cache_dir"}),
    "http": ({"url"}, {"timeout_s", "retries", "backoff_s"}),
}


def make_retriever(spec: dict[str, Any]) -> Retriever:
    """Build a retriever from a config dict: {"kind": "bm25", "corpus": path, "cache_dir": ...}
    or {"kind": "http", "url": "http://host:8000/retrieve", "timeout_s": 10, "retries": 3}."""
    kind = spec.get("kind")
    if kind not in _SPEC_KEYS:
        raise ValueError(f"retriever kind {kind!r} is unknown; use one of {sorted(_SPEC_KEYS)} "
                         f"(spec: {spec})")
    required, optional = _SPEC_KEYS[kind]
    keys = set(spec) - {"kind"}
    if required - keys:
        raise ValueError(f"retriever {kind!r} needs {sorted(required - keys)} (spec: {spec})")
    if keys - required - optional:
        raise ValueError(f"retriever {kind!r} does not take {sorted(keys - required - optional)}; "
                         f"it takes {sorted(required | optional)}")
    args = {k: v for k, v in spec.items() if k != "kind"}
    if kind == "bm25":
        return BM25Retriever(args.pop("corpus"), **args)
    return HTTPRetriever(**args)

