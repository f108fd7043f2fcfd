"""`classifier`: a learned pair classifier decides whether two completions are equivalent.

Loaded as DARLING (Li et al. 2025) loads its DeBERTa (`yimingzhang/deberta-v3-large-
generation-similarity`): `AutoTokenizer` and `AutoModelForSequenceClassification` from a hub id
or a folder, the two completions encoded as one text pair, and the softmax probability of the
`same_label` class compared with `threshold`. Classes are the connected components of the
pairs it calls equivalent (`selftrain.judges.classes_from_pairs`). The model is loaded once per
process and runs on the driver's CPU by default.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from selftrain.judges import JudgeLoadError, classes_from_pairs

DARLING_CLASSIFIER = "yimingzhang/deberta-v3-large-generation-similarity"


@functools.cache
def _load(model: str, device: str) -> tuple[Any, Any]:
    # Imported here: torch and transformers are paid for only when this judge is configured.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    # Pad on the right, as the encoder was trained: a left-padded pair shifts its absolute
    # positions and changes the logits of every pair shorter than its batch's longest.
    tokenizer.padding_side = "right"
    net = AutoModelForSequenceClassification.from_pretrained(model).to(device).eval()
    return tokenizer, net


class ClassifierJudge:
    """Pairs whose `same_label` probability is at least `threshold` are equivalent.

    `model`: hub id or folder (DARLING's classifier by default); `max_length`: tokens of one
    encoded pair; `batch_size`: pairs per forward pass.
    """

    name = "classifier"

    def __init__(self, task: Any = None, model: str = DARLING_CLASSIFIER, threshold: float = 0.5,
                 same_label: int = 1, max_length: int = 512, batch_size: int = 32,
                 device: str = "cpu") -> None:
        if not 0.0 <= threshold <= 1.0:
            raise JudgeLoadError(f"classifier judge: judge.args.threshold must lie in [0, 1], "
                                 f"got {threshold}")
        self.model, self.threshold, self.same_label = model, threshold, same_label
        self.max_length, self.batch_size, self.device = max_length, batch_size, device

    def same_probability(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """P(equivalent) of each pair, from the classifier's logits."""
        import torch

        try:
            tokenizer, net = _load(self.model, self.device)
        except OSError as err:
            raise JudgeLoadError(f"classifier judge: cannot load {self.model!r} ({err}); set "
                                 f"judge.args.model to a hub id or a local folder") from err
        if not 0 <= self.same_label < net.config.num_labels:
            raise JudgeLoadError(f"classifier judge: judge.args.same_label={self.same_label}, but "
                                 f"{self.model} has {net.config.num_labels} labels")
        out: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            enc = tokenizer([a for a, _ in chunk], [b for _, b in chunk], truncation=True,
                            max_length=self.max_length, padding=True, return_tensors="pt")
            with torch.no_grad():
                logits = net(**{k: v.to(self.device) for k, v in enc.items()}).logits
            out += logits.float().softmax(-1)[:, self.same_label].tolist()
        return out

    def classes(self, groups: Sequence[Sequence[str]]) -> list[list[int]]:
        return classes_from_pairs(
            groups, lambda pairs: [p >= self.threshold for p in self.same_probability(pairs)])
