"""Generation backends: one interface (`GenerationBackend`), a registry, two implementations."""

from selftrain.backends.base import Generation, GenerationBackend, SamplingConfig

__all__ = ["Generation", "GenerationBackend", "SamplingConfig", "make_backend"]


def make_backend(name: str, model_path: str, **kwargs) -> GenerationBackend:
    """Build the backend named in `rollout.backend` (imports lazily: vLLM is optional)."""
    if name == "hf":
        from selftrain.backends.hf import HFBackend

        return HFBackend(model_path, **kwargs)
    if name == "vllm":
        from selftrain.backends.vllm import VLLMBackend

        return VLLMBackend(model_path, **kwargs)
    raise ValueError(f"unknown rollout.backend {name!r}; known: 'hf', 'vllm'")
