"""`judge`: a served model grades each completion against a rubric, behind any OpenAI-compatible
endpoint (`vllm serve`, SGLang, a hosted API), through its /chat/completions.

The rubric prompt (`template`, with {prompt} and {completion}) asks for a line "Score: N" with
N from `low` to `high`; the value is (N - low) / (high - low). The last such line counts. An
answer without one, a number outside the range, a malformed body or no answer within
`timeout_s` (retries included) is an unknown score (None), counted in `unknown` and logged,
never a crash; only a call in which no request got an answer raises, since then the server is
down, not slow. The API key is read from the environment variable `api_key_env` names.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Sequence

import httpx

from critics.served import post_with_retries
from selftrain.http import run_sync
from selftrain.scorers.base import Score, ScorerLoadError

log = logging.getLogger(__name__)

RUBRIC = """Rate the response to the request below for quality, originality and how well it \
follows the request, from {low} (worst) to {high} (best).

Request:
{prompt}

Response:
{completion}

Answer with one line: "Score: N"."""
_SCORE = re.compile(r"score\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


class ScorerUnavailableError(RuntimeError):
    """No request of a scoring call got an answer from the served judge."""


class JudgeScorer:
    name = "judge"

    def __init__(self, base_url: str, model: str, template: str = RUBRIC, low: float = 1,
                 high: float = 10, system: str | None = None, max_tokens: int = 256,
                 temperature: float = 0.0, concurrency: int = 16, timeout_s: float = 120.0,
                 retries: int = 3, backoff_s: float = 1.0, api_key_env: str | None = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ScorerLoadError(f"judge scorer: base_url {base_url!r} must start with http:// "
                                  f"or https://, e.g. http://127.0.0.1:8000/v1")
        if high <= low or "{completion}" not in template:
            raise ScorerLoadError("judge scorer: needs high > low and a template with {completion}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.template, self.system, self.low, self.high = model, template, system, low, high
        self.params = {"max_tokens": max_tokens, "temperature": temperature}
        self.concurrency, self.timeout_s, self.retries, self.backoff_s = (
            concurrency, timeout_s, retries, backoff_s)
        self.headers: dict[str, str] = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ScorerLoadError(f"judge scorer: api_key_env names {api_key_env}, which is not set")
            self.headers["Authorization"] = f"Bearer {key}"
        self.unknown = 0
        """Scores left unknown so far (unreadable or unanswered)."""

    def read(self, text: str) -> Score:
        """The value of a judge's answer: its last "Score: N" line, scaled to [0, 1]."""
        found = _SCORE.findall(text)
        if not found:
            return Score(None, text, "no 'Score: N' in the answer")
        n = float(found[-1])
        if not self.low <= n <= self.high:
            return Score(None, text, f"score {n:g} outside {self.low:g}..{self.high:g}")
        return Score((n - self.low) / (self.high - self.low), text)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[Score]:
        asks = [self.template.format(prompt=p, completion=c, low=f"{self.low:g}", high=f"{self.high:g}")
                for p, c in zip(prompts, completions)]
        replies = run_sync(self._ask_all(asks))
        if asks and all(isinstance(r, Score) for r in replies):
            raise ScorerUnavailableError(f"judge scorer: none of {len(asks)} requests to {self.url} "
                                         f"got an answer; the last error: {replies[-1].error}")
        out = [r if isinstance(r, Score) else self.read(r) for r in replies]
        missed = [s for s in out if s.value is None]
        if missed:
            self.unknown += len(missed)
            log.warning("judge scorer: %d of %d scores unknown (e.g. %s)", len(missed), len(out),
                        missed[0].error)
        return out

    async def _ask_all(self, asks: list[str]) -> list[str | Score]:
        limit = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(headers=self.headers, timeout=httpx.Timeout(self.timeout_s),
                                     trust_env=False) as client:
            return await asyncio.gather(*(self._ask(client, limit, a) for a in asks))

    async def _ask(self, client: httpx.AsyncClient, limit: asyncio.Semaphore, ask: str) -> str | Score:
        """The judge's text, or an unknown `Score` saying why there is none."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        body = {"model": self.model, "messages": [*system, {"role": "user", "content": ask}],
                **self.params}
        async with limit:
            try:
                return await asyncio.wait_for(self._post(client, body), self.timeout_s)
            except asyncio.TimeoutError:
                return Score(None, None, f"no answer within timeout_s={self.timeout_s}")

    async def _post(self, client: httpx.AsyncClient, body: dict) -> str | Score:
        """The judge's text (retried as the `openai` critic's requests are), or why none came."""
        response = await post_with_retries(client, self.url, body, retries=self.retries,
                                           backoff_s=self.backoff_s)
        if isinstance(response, str):
            return Score(None, None, response)
        try:
            text = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return f"(malformed answer) {response.text[:200]}"  # read() finds no score
        return text if isinstance(text, str) else f"(malformed content) {text!r}"
