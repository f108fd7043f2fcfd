"""Generation backends: one interface (`GenerationBackend`), a registry, two implementations."""

from selftrain.backends.base import Generation, GenerationBackend, SamplingConfig
from selftrain.registry import Registry

__all__ = ["BACKENDS", "Generation", "GenerationBackend", "SamplingConfig", "make_backend"]

BACKENDS: Registry = Registry("backend", {
    "hf": "selftrain.backends.hf:HFBackend",
    "vllm": "selftrain.backends.vllm:VLLMBackend",
}, "selftrain.backends")
"""`rollout.backend` -> a class built as `Backend(model_path, **kwargs)` (imported only when
built: vLLM is optional)."""


def make_backend(name: str, model_path: str, **kwargs) -> GenerationBackend:
    """Build the backend named in `rollout.backend`."""
    return BACKENDS.resolve(name)(model_path, **kwargs)
