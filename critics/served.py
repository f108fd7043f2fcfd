"""`openai`: a generative critic served elsewhere, behind any OpenAI-compatible endpoint
(`vllm serve`, SGLang, a hosted API). It reads the `lm` critic's prompt and writes its verdict
lines (`critics.verdicts`), so the two are interchangeable in a config.

A served model is shared and remote, so every request is bounded: at most `concurrency` in
flight, each given `timeout_s` in total (connection, retries and a server that drips its
answer all count), retried with exponential backoff on connection errors, 408/429 and 5xx. A
request that still gets no answer, or an answer that is not the expected JSON, leaves its
steps unknown (`ok=None`, counted in `Critique.extra`), never a crash; only a call in which no
request got an answer raises, since then the server is down, not slow. `check()` is the
pre-flight (`selftrain.loop.checks.preflight`): an endpoint that cannot be reached fails before
round 0. The API key is read from the environment variable `api_key_env` names, so configs
and run folders hold the variable's name only.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any

import httpx

from critics.protocol import Critique, CritiqueRequest
from critics.registry import CriticLoadError
from critics.verdicts import PROMPT_TEMPLATE, format_prompt, read_critique
from selftrain.http import run_sync

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 429}
"""Besides 5xx: request timeout and rate limit are the server's to recover from."""


class CriticUnavailableError(RuntimeError):
    """No request of a critique call got an answer from the served critic."""


@dataclass
class Reply:
    """What one request brought back: the model's text, or why there is none."""

    text: str | None
    tokens: int = 0
    error: str | None = None


class OpenAICritic:
    """Prompts a served model with `template` (as the `lm` critic does) and parses its verdicts.

    `api`: "chat" sends the prompt as the user message of /chat/completions (after `system`,
    when set); "completions" sends it raw to /completions (a base model, no chat template).
    `extra_body` is merged into every request body (e.g. {"top_k": 1} for vLLM).
    """

    name = "openai"

    def __init__(self, task: Any = None, *, base_url: str, model: str, api: str = "chat",
                 template: str = PROMPT_TEMPLATE, system: str | None = None,
                 max_tokens: int = 512, temperature: float = 0.0, seed: int | None = 0,
                 concurrency: int = 16, timeout_s: float = 120.0, retries: int = 3,
                 backoff_s: float = 1.0, api_key_env: str | None = None,
                 extra_body: dict[str, Any] | None = None) -> None:
        if api not in ("chat", "completions"):
            raise CriticLoadError(f"openai critic: critic.args.api must be chat or completions, got {api!r}")
        if not base_url.startswith(("http://", "https://")):
            raise CriticLoadError(f"openai critic: critic.args.base_url {base_url!r} must start with "
                                  f"http:// or https://, e.g. http://127.0.0.1:8000/v1")
        if concurrency < 1 or timeout_s <= 0 or retries < 0:
            raise CriticLoadError(f"openai critic: concurrency >= 1, timeout_s > 0 and retries >= 0 "
                                  f"are needed, got {concurrency}, {timeout_s} and {retries}")
        self.task = task
        self.base_url = base_url.rstrip("/")
        self.model, self.api, self.template, self.system = model, api, template, system
        self.concurrency, self.timeout_s = concurrency, timeout_s
        self.retries, self.backoff_s = retries, backoff_s
        self.params = {"max_tokens": max_tokens, "temperature": temperature,
                       **({"seed": seed} if seed is not None else {}), **(extra_body or {})}
        self.api_key_env = api_key_env
        self._headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise CriticLoadError(
                    f"openai critic: critic.args.api_key_env names {api_key_env}, which is not set "
                    f"in the environment; export it where the driver and the critic workers run")
            self._headers["Authorization"] = f"Bearer {key}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/{'chat/completions' if self.api == 'chat' else 'completions'}"

    def check(self) -> None:
        """Pre-flight: the endpoint answers, accepts the key, and serves `model` when it lists
        its models (an endpoint without GET /models passes on reachability alone)."""
        try:
            response = run_sync(asyncio.wait_for(self._get(f"{self.base_url}/models"), self.timeout_s))
        except (httpx.HTTPError, asyncio.TimeoutError) as err:
            raise CriticLoadError(
                f"openai critic: cannot reach {self.base_url} ({_describe(err)}); start the "
                f"server (e.g. `vllm serve MODEL --port 8000`, then base_url "
                f"http://127.0.0.1:8000/v1) or fix critic.args.base_url") from err
        if response.status_code in (401, 403):
            hint = (f"check the key in ${self.api_key_env}" if self.api_key_env
                    else "set critic.args.api_key_env to the variable holding the key")
            raise CriticLoadError(f"openai critic: {self.base_url} refused us with HTTP "
                                  f"{response.status_code}; {hint}")
        if response.status_code >= 500:
            raise CriticLoadError(f"openai critic: {self.base_url}/models answered HTTP "
                                  f"{response.status_code}: {response.text[:200]}")
        served = _model_ids(response) if response.status_code == 200 else None
        if served is not None and self.model not in served:
            raise CriticLoadError(f"openai critic: {self.base_url} serves {served}, not "
                                  f"{self.model!r}; set critic.args.model to one of them")

    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]:
        prompts = [format_prompt(r.query.prompt, r.steps, self.template) for r in requests]
        replies = run_sync(self._ask_all(prompts))
        failed = [r.error for r in replies if r.text is None]
        if requests and len(failed) == len(requests):
            raise CriticUnavailableError(f"openai critic: none of {len(requests)} requests to "
                                         f"{self.url} got an answer; the last error: {failed[-1]}")
        if failed:
            log.warning("openai critic: %d of %d requests to %s got no answer (e.g. %s); their "
                        "steps are unknown", len(failed), len(requests), self.url, failed[0])
        out = []
        for req, reply in zip(requests, replies):
            crit = read_critique(req, self.name, reply.text or "", reply.tokens)
            crit.raw_text = reply.text
            if reply.error:
                crit.extra["error"] = reply.error
            out.append(crit)
        return out

    def ask(self, prompts: list[str]) -> list[Reply]:
        """The served model's answers to raw `prompts`, bounded as critiques are (other users
        of the endpoint, such as the `lm` equivalence judge, send their own prompts)."""
        return run_sync(self._ask_all(prompts))

    async def _ask_all(self, prompts: list[str]) -> list[Reply]:
        limit = asyncio.Semaphore(self.concurrency)
        pool = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(headers=self._headers, limits=pool,
                                     timeout=httpx.Timeout(self.timeout_s)) as client:
            return await asyncio.gather(*(self._ask(client, limit, p) for p in prompts))

    async def _ask(self, client: httpx.AsyncClient, limit: asyncio.Semaphore, prompt: str) -> Reply:
        async with limit:  # the deadline starts when the request may go out
            try:
                return await asyncio.wait_for(self._ask_with_retries(client, prompt), self.timeout_s)
            except asyncio.TimeoutError:
                return Reply(None, error=f"no answer within timeout_s={self.timeout_s}")

    async def _ask_with_retries(self, client: httpx.AsyncClient, prompt: str) -> Reply:
        if self.api == "chat":
            system = [{"role": "system", "content": self.system}] if self.system else []
            body = {"messages": [*system, {"role": "user", "content": prompt}]}
        else:
            body = {"prompt": prompt}
        body = {"model": self.model, **body, **self.params}
        got = await post_with_retries(client, self.url, body, retries=self.retries,
                                      backoff_s=self.backoff_s)
        return Reply(None, error=got) if isinstance(got, str) else self._read(got)

    def _read(self, response: httpx.Response) -> Reply:
        """The text and generated-token count of an answer; a malformed one is an empty text
        (every step unknown), with the reason kept."""
        if response.status_code != 200:
            return Reply(None, error=f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"]["content"] if self.api == "chat" else choice["text"]
            tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
        except (ValueError, KeyError, IndexError, TypeError) as err:
            return Reply("", error=f"malformed answer ({_describe(err)}): {response.text[:200]!r}")
        if not isinstance(text, str):
            return Reply("", tokens, error=f"malformed answer: content is {text!r}")
        return Reply(text, tokens)

    async def _get(self, url: str) -> httpx.Response:
        async with httpx.AsyncClient(headers=self._headers, timeout=self.timeout_s) as client:
            return await client.get(url)


async def post_with_retries(client: httpx.AsyncClient, url: str, body: dict[str, Any], *,
                            retries: int, backoff_s: float) -> httpx.Response | str:
    """POST `body` to an OpenAI-compatible `url`, retried with exponential backoff on connection
    errors, 408/429 and 5xx: the first other response (the caller reads it), or why there is
    none after `retries` + 1 attempts. The caller bounds the whole by its own deadline."""
    error = ""
    for attempt in range(retries + 1):
        if attempt:
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            response = await client.post(url, json=body)
        except httpx.TransportError as err:
            error = _describe(err)
            continue
        if response.status_code < 500 and response.status_code not in RETRY_STATUS:
            return response
        error = f"HTTP {response.status_code}: {response.text[:200]}"
    return f"{error} (after {retries + 1} attempts)"


def _model_ids(response: httpx.Response) -> list[str] | None:
    try:
        return [m["id"] for m in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        return None


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
