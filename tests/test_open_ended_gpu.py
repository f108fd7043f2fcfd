"""configs/open_ended_gpu.yaml loads and validates without downloading anything: every arm's
config, the prompt files (a `prompt` column), the scorer's name and arguments, the plug-in
names; and the reward model scorer's `dtype` loads a (tiny, built here) model in bfloat16."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import transformers

from selftrain.config import load_config
from selftrain.experiments.plan import arm_configs
from selftrain.loop.checks import checked_arm
from selftrain.scorers import SCORERS, ScorerLoadError, build_scorer
from selftrain.tasks import abilities, make_task
from tests.test_scorers import COMPLETIONS, PROMPTS, reward_model  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_hub(monkeypatch):
    """Any attempt to load a model, tokenizer or config (from the hub or a folder) fails."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to load {args[1:] or kwargs}")

    for cls in (transformers.AutoConfig, transformers.AutoTokenizer,
                transformers.AutoModelForSequenceClassification, transformers.AutoModelForCausalLM):
        monkeypatch.setattr(cls, "from_pretrained", classmethod(refuse))


def test_the_config_loads_and_validates_offline(no_hub, monkeypatch):
    monkeypatch.chdir(ROOT)  # the prompt files are named relative to the repository
    cfg = load_config(ROOT / "configs" / "open_ended_gpu.yaml")
    assert (cfg.rollout.backend, cfg.model.chat_template) == ("vllm", True)
    assert cfg.model.path == "Qwen/Qwen2.5-1.5B-Instruct"
    arms = arm_configs(cfg)
    assert {k: a.train.objective for k, a in arms.items()} == {
        "rs": "sft", "dpo": "dpo", "dpo_diverse": "dpo"}
    for label, arm in arms.items():
        checked_arm(arm, label)  # filter, sampling, backend and objective names are known
    task = make_task(cfg.task.name, **cfg.task.args)
    abilities(task).input_check.check()  # both prompt files read, the prompt column there
    train, test = task.queries("train"), task.queries("test")
    assert (len(train), len(test)) == (42, 16)
    assert all(q.prompt.strip() for q in train + test)
    assert not {q.prompt for q in train} & {q.prompt for q in test}
    spec = cfg.task.args["scorer"]
    assert spec["args"]["model"] == "Skywork/Skywork-Reward-V2-Llama-3.1-8B"
    scorer_class = SCORERS.resolve(spec["name"])
    inspect.signature(scorer_class).bind(**spec["args"])  # every argument is one it takes


def test_reward_model_loads_in_the_dtype_asked(reward_model):  # noqa: F811
    path, model, tok = reward_model
    full = build_scorer({"name": "reward_model", "args": {"model": str(path)}})
    half = build_scorer({"name": "reward_model", "args": {"model": str(path),
                                                          "dtype": "bfloat16"}})
    assert next(full.model.parameters()).dtype == torch.float32
    assert next(half.model.parameters()).dtype == torch.bfloat16
    a, b = full.score(PROMPTS, COMPLETIONS), half.score(PROMPTS, COMPLETIONS)
    assert [s.raw for s in b] == pytest.approx([s.raw for s in a], abs=0.1)
    with pytest.raises(ScorerLoadError, match="dtype 'half_float' is not a torch dtype"):
        build_scorer({"name": "reward_model", "args": {"model": str(path), "dtype": "half_float"}})
