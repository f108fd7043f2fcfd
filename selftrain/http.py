"""HTTP calls that end by a deadline, whatever the server does.

A socket timeout bounds each read, not a request: a server that answers one byte per second
keeps a client waiting forever. Each request here runs inside `asyncio.wait_for`, so it ends
when its deadline passes, also in the middle of a slow answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion from sync code, also when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def post(url: str, body: bytes, deadline_s: float, *, headers: dict[str, str] | None = None,
         trust_env: bool = True) -> httpx.Response:
    """POST `body` and read the whole answer within `deadline_s` seconds; on timeout raises
    `TimeoutError`. `trust_env=False` ignores HTTP(S)_PROXY (for a server on loopback)."""

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(timeout=deadline_s, trust_env=trust_env) as client:
            return await client.post(url, content=body, headers=headers)

    async def bounded() -> httpx.Response:
        try:
            return await asyncio.wait_for(send(), deadline_s)
        except asyncio.TimeoutError:
            raise TimeoutError(f"timed out: no complete answer within {deadline_s:g} s") from None

    return run_sync(bounded())
