"""`lm`: a generative critic. A causal LM reads the query and the numbered steps and writes one
verdict line per step; the prompt and the parser are `critics.verdicts` (shared with the served
`openai` critic).
"""

from __future__ import annotations

from typing import Any

from critics.protocol import Critique, CritiqueRequest
from critics.verdicts import PROMPT_TEMPLATE, format_prompt, read_critique
from selftrain.backends import SamplingConfig, make_backend


class LMCritic:
    """Any HF causal LM (a folder or hub id) prompted with `PROMPT_TEMPLATE`, greedy by default.

    Requests are generated in batches of `batch_size` through the rollout backends, so the
    same critic runs on the transformers backend (CPU/GPU) or on vLLM.
    """

    name = "lm"

    def __init__(self, task: Any = None, *, model_path: str, max_new_tokens: int = 512,
                 temperature: float = 0.0, batch_size: int = 32, backend: str = "hf",
                 template: str = PROMPT_TEMPLATE, dtype: str = "float32", seed: int = 0) -> None:
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError(f"lm critic: batch_size and max_new_tokens must be >= 1, got "
                             f"{batch_size} and {max_new_tokens}")
        self.task = task
        self.model_path = str(model_path)
        self.template = template
        self.batch_size = batch_size
        self.seed = seed
        self.params = SamplingConfig(n=1, temperature=temperature, max_new_tokens=max_new_tokens)
        self.backend = make_backend(backend, self.model_path, dtype=dtype)

    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]:
        # Batches of similar step counts: a batch generates until its longest answer is done,
        # and answer length grows with the number of steps.
        prompts = [format_prompt(r.query.prompt, r.steps, self.template) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: (len(requests[i].steps), len(prompts[i])))
        out: list[Critique | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            gens = self.backend.generate([prompts[i] for i in batch], self.params, self.seed)
            for i, [gen] in zip(batch, gens):
                out[i] = read_critique(requests[i], self.name, gen.text, gen.num_tokens)
        return out  # type: ignore[return-value]  # every slot is filled above
