"""`lm`: a language model asked whether two completions say the same thing.

The model is served behind an OpenAI-compatible endpoint (`vllm serve`, SGLang, a hosted API)
and reached through the served critic's client (`critics.served.OpenAICritic`), so requests
are bounded and retried the same way. Each pair of distinct completions of a group is one
prompt (`template`, fields `a` and `b`); an answer whose first word is "yes" (any case) means
equivalent. A pair that gets no answer counts as different, and is logged, never a crash;
classes are the connected components of the equivalent pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from critics.served import OpenAICritic
from selftrain.judges import JudgeLoadError, classes_from_pairs

log = logging.getLogger(__name__)

TEMPLATE = ("Do these two answers to the same problem take the same approach and reach the "
            "same result? Reply yes or no.\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\nReply:")


class LMJudge:
    """`base_url`, `model` and the rest of `args` go to the served critic's client (api,
    concurrency, timeout_s, retries, api_key_env, ...); `template` is the pair prompt."""

    name = "lm"

    def __init__(self, task: Any = None, *, base_url: str, model: str,
                 template: str = TEMPLATE, max_tokens: int = 4, **client_args: Any) -> None:
        if "{a}" not in template or "{b}" not in template:
            raise JudgeLoadError(f"lm judge: judge.args.template needs the fields {{a}} and {{b}}, "
                                 f"got {template!r}")
        self.template = template
        try:
            self.client = OpenAICritic(base_url=base_url, model=model, max_tokens=max_tokens,
                                       **client_args)
        except Exception as err:  # the client's own checks name the key
            raise JudgeLoadError(f"lm judge: {err}".replace("critic.args", "judge.args")) from err

    def same(self, pairs: list[tuple[str, str]]) -> list[bool]:
        replies = self.client.ask([self.template.format(a=a, b=b) for a, b in pairs])
        failed = [r.error for r in replies if r.text is None]
        if failed:
            log.warning("lm judge: %d of %d pairs got no answer (e.g. %s); they count as "
                        "different", len(failed), len(pairs), failed[0])
        return [(r.text or "").strip().lower().startswith("yes") for r in replies]

    def classes(self, groups: Sequence[Sequence[str]]) -> list[list[int]]:
        return classes_from_pairs(groups, self.same)
