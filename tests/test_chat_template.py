"""One switch, model.chat_template: an instruct policy sees every prompt in its chat template,
trains on the same rendering, and continues inside the assistant turn."""

from __future__ import annotations

import shutil

import pandas as pd
from conftest import small_config
from transformers import AutoTokenizer

from selftrain.cli import main
from selftrain.loop.driver import run_arm
from selftrain.models.source import resolve_model
from selftrain.tasks import make_task

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def instruct_copy(tmp_path, model_cache):
    """The tiny countdown model made an 'instruct' model: its tokenizer gets a chat template
    and the model a short SFT on demonstrations in that template, so it answers in it."""
    import torch
    from transformers import AutoModelForCausalLM

    from selftrain.device import single_cpu_thread
    from selftrain.train.sft import SFTExample, SFTSettings, train_sft

    cfg = small_config(tmp_path, model_cache)
    task = make_task(cfg.task.name, **cfg.task.args)
    path = tmp_path / "instruct"
    shutil.copytree(resolve_model(cfg, task), path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = TEMPLATE
    demos = task.demonstrations(levels=[2, 3], per_query=2, seed=0, extra_per_level=100)
    chat = [SFTExample(tok.apply_chat_template([{"role": "user", "content": d.prompt}],
                                               tokenize=False, add_generation_prompt=True),
                       d.completion) for d in demos]
    model = AutoModelForCausalLM.from_pretrained(path)
    with single_cpu_thread():
        train_sft(model, tok, chat, SFTSettings(epochs=100, lr=1e-3, batch_size=32,
                                                max_steps=120), torch.device("cpu"))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_prompts_training_rows_and_resumed_repairs_use_the_chat_template(tmp_path, ray_cluster,
                                                                          model_cache):
    model = instruct_copy(tmp_path, model_cache)
    cfg = small_config(tmp_path, model_cache, f"model.path={model}", "model.chat_template=true",
                       "arm.name=critique", "critic.name=countdown-oracle", "refine.mode=resume",
                       "refine.attempts=1", "rounds=1", "tracking.enabled=false")
    run_arm(cfg, "critique")
    rd = tmp_path / "runs" / cfg.experiment / "critique" / "seed0" / "round_0"
    samples = pd.read_parquet(rd / "samples.parquet")
    task = make_task(cfg.task.name, **cfg.task.args)
    rendered = {q.query_id: f"<|user|>{q.prompt}<|assistant|>" for q in task.queries("train")}
    assert (samples["prompt"] == samples["query_id"].map(rendered)).all()
    train = pd.read_parquet(rd / "train.parquet")
    assert len(train) and (train["prompt"] == train["query_id"].map(rendered)).all()
    # a resume repair keeps the good steps, inside the same assistant turn
    critiques = pd.read_parquet(rd / "critiques.parquet").set_index("sample_id")
    by_id = samples.set_index("sample_id")
    repairs = samples[samples["origin"] == "refine"]
    assert len(repairs)
    for row in repairs.itertuples():
        parent = by_id.loc[row.parent_id]
        cut = int(critiques.loc[row.parent_id, "first_error"])
        kept = "".join(step + "\n" for step in list(parent["steps"])[:cut])
        assert row.prompt == parent["prompt"] and row.completion.startswith(kept)
        assert "<|user|>" not in row.completion
    assert (tmp_path / "runs" / cfg.experiment / "critique" / "seed0" / "round_1" /
            "metrics.json").is_file()  # trained on the rendered rows and sampled again


def test_a_chat_template_switch_on_a_model_without_one_fails_before_ray(tmp_path, model_cache,
                                                                         capsys):
    cfg = small_config(tmp_path, model_cache)
    config = tmp_path / "config.yaml"
    from selftrain.config import dump_yaml

    config.write_text(dump_yaml(cfg))
    assert main(["run", str(config), "model.chat_template=true"]) == 2
    err = capsys.readouterr().err
    assert "has no chat template" in err and err.count("\n") == 1
    assert not (tmp_path / "runs" / ".ray").exists()  # Ray never started
