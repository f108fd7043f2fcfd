"""Generation with Hugging Face transformers (CPU or GPU): the default backend."""

from __future__ import annotations

from dataclasses import replace

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from selftrain.backends.base import Generation, SamplingConfig
from selftrain.device import best_device, dtype_of
from selftrain.train.checkpoints import load_into


class HFBackend:
    """Batched `model.generate` with left padding; weights swapped in place between rounds."""

    def __init__(self, model_path: str, dtype: str = "float32", **_: object) -> None:
        self.device = best_device()
        self.dtype = dtype_of(dtype) if self.device.type == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = self._load(model_path)
        self.model_path = model_path

    def _load(self, path: str):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        return model.to(self.device).eval()

    def load_weights(self, path: str) -> None:
        """Copy the new checkpoint's tensors into the live model (no second model is built)."""
        load_into(self.model, path)
        self.model_path = path

    def max_context(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    @torch.inference_mode()
    def generate(
        self, prompts: list[str], params: SamplingConfig, seed: int
    ) -> list[list[Generation]]:
        if not prompts:
            return []
        torch.manual_seed(seed)
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        greedy = params.temperature <= 0
        copies = params.n if greedy else 1  # greedy samples are identical: decode once, repeat
        out = self.model.generate(
            **enc,
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            top_k=None,
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=params.n // copies,
            stop_strings=list(params.stop) or None,
            tokenizer=self.tokenizer if params.stop else None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        results: list[list[Generation]] = [[] for _ in prompts]
        per_prompt = params.n // copies
        for row, ids in enumerate(new):
            gen = self._finish(ids, params)
            results[row // per_prompt].extend(replace(gen) for _ in range(copies))
        return results

    def _finish(self, ids: list[int], params: SamplingConfig) -> Generation:
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        reason = "length"
        if eos in ids:
            ids = ids[: ids.index(eos) + 1]
            reason = "stop"
        elif pad != eos:
            while ids and ids[-1] == pad:
                ids = ids[:-1]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = [(text.find(s) + len(s)) for s in params.stop if s in text]
        if cut:
            end = min(cut)
            if end < len(text):
                text = text[:end]
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            reason = "stop"
        return Generation(text=text, num_tokens=len(ids), finish_reason=reason)
