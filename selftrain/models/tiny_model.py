"""The embedded base model: a tiny Llama with its own tokenizer, seed-SFT'd on easy levels.

Nothing can be downloaded here, so the default policy is built locally: a `LlamaConfig` model of
about a million parameters (head dim 32, so vLLM can load it too) and a tokenizer made with
`tokenizers` (character-level, or a byte-level BPE trained on the demonstrations), both saved
with `save_pretrained`. It is then finetuned on solver-written demonstrations of the task's
easier levels only, so that the hard levels are genuinely hard for it: the starting point of
tail narrowing. The folder is built once and
cached under a key of everything that shapes it; the demo's is shipped (`models.shipped`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import string
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from selftrain.config import TinyModelConfig
from selftrain.device import single_cpu_thread
from selftrain.models.shipped import copy_shipped
from selftrain.tasks.base import EmbeddedModel
from selftrain.train.sft import SFTExample, SFTSettings, train_sft

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = list(string.printable[:95]) + ["\n", "—"]


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character: a BPE model with no merges splits text into characters."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL + CHARS)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()  # join characters back without spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", padding_side="left",
    )


def build_bpe_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2's pre-tokenizer) trained on `texts`: deterministic for the same
    texts, and it round-trips any string, since every byte is in the alphabet."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", padding_side="left", clean_up_tokenization_spaces=False,
    )


def build_tokenizer(cfg: TinyModelConfig, texts: list[str]) -> PreTrainedTokenizerFast:
    if cfg.tokenizer == "char":
        return build_char_tokenizer()
    if cfg.tokenizer == "bpe":
        return build_bpe_tokenizer(texts, cfg.bpe_vocab_size)
    raise ValueError(f"model.tiny.tokenizer must be 'char' or 'bpe', got {cfg.tokenizer!r}")


def build_tiny_llama(cfg: TinyModelConfig, vocab_size: int, tokenizer) -> LlamaForCausalLM:
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def cache_key(cfg: TinyModelConfig, task_description: dict) -> str:
    # v2: the SFT schedule is transformers' cosine with a floor (a v1 model was trained with
    # the hand-written one, one step apart): a cache never mixes the two
    blob = json.dumps({"model": asdict(cfg), "task": task_description, "v": 2}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ensure_tiny_model(task: EmbeddedModel, cfg: TinyModelConfig, cache_dir: str | Path) -> Path:
    """Path of the cached base model for `task`, building it first when missing."""
    path = Path(cache_dir) / f"{task.name}-{cache_key(cfg, task.describe())}"
    if (path / "config.json").is_file() and (path / "selftrain_base.json").is_file():
        return path
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if not copy_shipped(path.name, tmp):  # the repository ships the demo's model
        _say_rebuild(task, cfg, path)
        build_base_model(task, cfg, tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)  # atomic: a half-built model is never taken for a cached one
    return path


def _say_rebuild(task: EmbeddedModel, cfg: TinyModelConfig, path: Path) -> None:
    """Before a build: that it happens, which settings caused it, about how long it takes."""
    import logging

    from selftrain.models.rebuild_notice import rebuild_notice
    from selftrain.tracking import console

    notice = rebuild_notice(task.describe(), cfg, path.parent, path)
    console.print(notice, style="yellow", markup=False, highlight=False, soft_wrap=True)
    logging.getLogger("selftrain").info(notice)


def build_base_model(task: EmbeddedModel, cfg: TinyModelConfig, out: Path) -> dict:
    from selftrain.progress import StepProgress

    demos = task.demonstrations(levels=cfg.sft_levels, per_query=cfg.demos_per_query,
                                seed=cfg.seed, extra_per_level=None)
    for level, count in sorted(cfg.sft_queries_per_level.items()):
        demos += task.demonstrations(levels=[int(level)], per_query=cfg.demos_per_query,
                                     seed=cfg.seed, extra_per_level=count)
    tokenizer = build_tokenizer(cfg, [d.prompt + d.completion for d in demos])
    model = build_tiny_llama(cfg, len(tokenizer), tokenizer)
    examples = [SFTExample(prompt=d.prompt, completion=d.completion,
                           masked_spans=list(d.masked_spans)) for d in demos]
    settings = SFTSettings(
        epochs=10_000, lr=cfg.sft_lr, batch_size=cfg.sft_batch_size, max_steps=cfg.sft_steps,
        warmup_ratio=0.05, seed=cfg.seed, max_length=cfg.max_position_embeddings,
    )
    params = sum(p.numel() for p in model.parameters())
    start = time.time()
    desc = f"building base model for {task.name} ({params / 1e6:.2f}M params)"
    with single_cpu_thread(), StepProgress(desc, cfg.sft_steps, unit="steps",
                                           fields={"loss": ".3f"}) as progress:
        stats = train_sft(model, tokenizer, examples, settings, torch.device("cpu"),
                          on_step=lambda s, t, loss: progress.advance(loss=loss))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    portable_tokenizer_config(out)
    info = {
        "task": task.describe(), "model": asdict(cfg), "params": params,
        "demonstrations": len(examples), "sft": stats, "seconds": round(time.time() - start, 1),
    }
    (out / "selftrain_base.json").write_text(json.dumps(info, indent=2))
    return info


def portable_tokenizer_config(out: Path) -> None:
    """Name the tokenizer class every transformers version knows (4.x has no TokenizersBackend)."""
    path = out / "tokenizer_config.json"
    conf = json.loads(path.read_text())
    conf["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(conf, indent=2))


