"""What the policy sees: a task's prompt as written (base models) or, with
`model.chat_template: true`, as the user turn of the policy tokenizer's chat template.

One switch for every task. The driver renders each pool and test query once, before the first
round, so every prompt the policy sees (first pass, evaluation, agent episodes, refinements)
and every training row (prompt + completion) is the same rendering: the policy is finetuned on
exactly what it is prompted with. Generation continues inside the assistant turn, so a
`resume` refinement (prompt + the good steps) and an agent's later turns (its text with the
observations) stay in that turn, as in Search-R1's instruct runs. A `rewrite` refinement asks
again in a new user turn that holds the question, the attempt and the critique.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from selftrain.config import Config, ConfigError
from selftrain.tasks import Task, abilities
from selftrain.types import Query


class PromptFormat:
    """Renders user messages for the policy: identity, or its tokenizer's chat template."""

    def __init__(self, tokenizer: Any, chat: bool, system: str | None = None) -> None:
        self.tokenizer, self.chat, self.system = tokenizer, chat, system

    @classmethod
    def of(cls, cfg: Config, tokenizer: Any, where: str) -> PromptFormat:
        """The run's format; with `model.chat_template` on and a tokenizer that has no chat
        template, a ConfigError (before Ray starts) naming the model."""
        chat = cfg.model.chat_template
        if chat and not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"model.chat_template is true, but the tokenizer of {where} has no "
                              f"chat template (a base model?): set model.chat_template: false or "
                              f"model.path to an instruct model")
        if cfg.model.system_prompt is not None and not chat:
            raise ConfigError("model.system_prompt needs model.chat_template: true")
        return cls(tokenizer, chat, cfg.model.system_prompt)

    def render(self, user_message: str) -> str:
        if not self.chat:
            return user_message
        messages = [{"role": "user", "content": user_message}]
        if self.system is not None:
            messages.insert(0, {"role": "system", "content": self.system})
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)

    def queries(self, task: Task, queries: list[Query]) -> list[Query]:
        """The queries as the policy sees them (unchanged without a chat template)."""
        if not self.chat:
            return queries
        chat = abilities(task).chat_message
        out = []
        for q in queries:
            message = chat.user_message(q) if chat is not None else q.prompt
            out.append(replace(q, prompt=self.render(message), user_message=message))
        return out
