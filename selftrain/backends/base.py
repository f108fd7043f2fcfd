"""The generation-backend interface shared by the transformers and vLLM implementations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings for one `generate` call; maps 1:1 onto vLLM's `SamplingParams`."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()
    """Generation of a sequence ends at the first of these strings; the string is kept in the text."""


@dataclass
class Generation:
    """One sampled continuation of a prompt."""

    text: str
    """Generated text only (no prompt), truncated just after a stop string if one was hit."""
    num_tokens: int
    """Tokens the policy generated for this text (what `gen_tokens` counts)."""
    finish_reason: str = "length"
    """'stop' (stop string or EOS) or 'length' (max_new_tokens reached)."""
    masked_spans: list[tuple[int, int]] = field(default_factory=list)
    """Agent rollouts: character spans of `text` written by the environment (not trained on)."""


class GenerationBackend(Protocol):
    """Generates continuations; holds one model in memory and swaps its weights between rounds."""

    def generate(
        self, prompts: list[str], params: SamplingConfig, seed: int
    ) -> list[list[Generation]]:
        """Return `params.n` generations per prompt, in prompt order.

        `seed` makes the call reproducible: the same prompts, params and seed give the same
        texts on the same hardware, whichever worker runs them (resume and retry rely on it).
        """
        ...

    def load_weights(self, path: str) -> None:
        """Load the checkpoint at `path` (an HF `save_pretrained` folder) into the live model."""
        ...

    def max_context(self) -> int:
        """Longest prompt + completion, in tokens, that the model accepts."""
        ...

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Token counts of `texts` under the model's tokenizer (no special tokens)."""
        ...
