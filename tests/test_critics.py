"""Critics: the protocol and its checks, the registry, the built-in critics, critic training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from critics import (
    Critic,
    CriticLoadError,
    Critique,
    CritiqueRequest,
    StepVerdict,
    build_critic,
    checked,
    known_critics,
    register_critic,
    resolve_critic,
)
from critics.lm import LMCritic
from critics.protocol import CriticOutputError
from critics.registry import BUILTIN_CRITICS
from critics.verdicts import format_prompt, format_verdicts, parse_verdicts
from selftrain.config import ConfigError, CriticTrainConfig, TinyModelConfig
from selftrain.critic_training import train_critics
from selftrain.models.tiny_model import (
    build_char_tokenizer,
    build_tiny_llama,
    portable_tokenizer_config,
)
from selftrain.tasks.countdown import CountdownTask
from selftrain.types import Query

REPO = Path(__file__).resolve().parent.parent
Q23 = Query("cd-hand", 3, "3 7 2 -> 23\n", {"numbers": [3, 7, 2], "target": 23})
"""3 7 2 -> 23: solved by 7*3=21, 21+2=23."""


def request(steps: list[str], sample_id: str = "s0", query: Query = Q23) -> CritiqueRequest:
    return CritiqueRequest(sample_id=sample_id, query=query, steps=steps,
                           completion="".join(s + "\n" for s in steps))


class FixedCritic:
    """Returns what it was given, whatever it is asked: a critic that breaks the protocol."""

    name = "fixed"

    def __init__(self, critiques: list[Critique]) -> None:
        self.critiques = critiques

    def critique(self, requests: list[CritiqueRequest]) -> list[Critique]:
        return self.critiques


class NotACritic:
    """Builds fine but has no `critique` method."""

    def __init__(self, task=None) -> None:
        self.name = "not-a-critic"


# ---------------------------------------------------------------- protocol


def test_checked_rejects_a_critic_that_skips_a_request():
    ok = Critique("s0", "fixed", [StepVerdict(True, 1.0)])
    with pytest.raises(CriticOutputError, match=r"critic 'fixed' returned 1 critiques for 2 requests"):
        checked(FixedCritic([ok]), [request(["7*3=21"], "s0"), request(["7*3=21"], "s1")])


def test_checked_rejects_wrong_verdict_count_naming_critic_and_sample():
    short = Critique("s7", "fixed", [StepVerdict(True, 1.0)])
    with pytest.raises(CriticOutputError, match=r"'fixed' returned 1 verdicts for sample s7 which has 2 steps"):
        checked(FixedCritic([short]), [request(["7*3=21", "21+2=23"], "s7")])


# ---------------------------------------------------------------- registry


def test_the_builtin_critics_are_registered():
    assert {"countdown-oracle", "noisy", "lm", "prm"} <= set(known_critics())


def test_listing_critics_imports_no_torch_and_no_critic_module():
    """The CLI and config checks list critic names; that must stay cheap and free of cycles."""
    code = ("import sys, critics; names = critics.known_critics(); "
            "loaded = [m for m in sys.modules if m == 'torch' or m.startswith('critics.') "
            "and m not in ('critics.protocol', 'critics.registry')]; "
            "print(len(names), loaded)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    count, loaded = out.stdout.split(" ", 1)
    assert int(count) >= 5 and loaded.strip() == "[]"


def test_a_registered_class_is_built_by_name_and_listed():
    @register_critic("test-always-ok")
    class AlwaysOk:
        name = "test-always-ok"

        def __init__(self, task=None):
            pass

        def critique(self, requests):
            return [Critique(r.sample_id, self.name, [StepVerdict(True, 1.0) for _ in r.steps])
                    for r in requests]

    assert "test-always-ok" in known_critics()
    [crit] = checked(build_critic("test-always-ok", None, {}, None), [request(["7*3=21"])])
    assert crit.passed and crit.critic == "test-always-ok"


def test_every_builtin_critic_path_imports():
    for name, path in BUILTIN_CRITICS.items():
        assert callable(resolve_critic(name)), path


def test_unknown_critic_lists_the_known_ones():
    with pytest.raises(CriticLoadError) as err:
        build_critic("countdown-orcale", None, {}, None)
    assert "unknown critic 'countdown-orcale'" in str(err.value)
    assert "countdown-oracle" in str(err.value) and "prm" in str(err.value)


@pytest.mark.parametrize("path, message", [
    ("critics.noisy.NoisyCritic", "must look like 'my_pkg.my_module:MyCritic'"),
    ("no_such_module_xyz:Critic", "importing no_such_module_xyz failed"),
    ("critics.noisy:NoSuchClass", "module critics.noisy has no NoSuchClass"),
])
def test_bad_critic_paths_say_what_is_wrong(path, message):
    with pytest.raises(CriticLoadError, match=message):
        build_critic(None, path, {}, None)


def test_a_class_that_does_not_fit_the_protocol_is_refused():
    with pytest.raises(CriticLoadError, match="does not fit the Critic protocol"):
        build_critic(None, f"{__name__}:NotACritic", {}, None)


def test_wrong_critic_args_name_the_critic_and_the_args():
    with pytest.raises(CriticLoadError, match=r"critic 'noisy' could not be built with args \{'flip': 0.5\}"):
        build_critic("noisy", None, {"flip": 0.5}, None)
    with pytest.raises(CriticLoadError, match="'lm' could not be built"):
        build_critic("lm", None, {}, None)  # model_path is required


# ---------------------------------------------------------------- countdown oracle


@pytest.mark.parametrize("steps, first_error, feedback", [
    (["7*3=21", "21+2=23"], -1, ""),
    (["7*3=20", "20+2=22"], 0, "Step 1: 7*3=20 is wrong: 7*3=21"),
    (["7*3=21", "21+5=26"], 1, "Step 2: 5 is not available (have 2 21)"),
    (["7+3=10", "10*2=20"], 0, "target 23 cannot be reached from 2 10 anymore"),
    (["seven times three"], 0, "cannot read 'seven times three'"),
    (["7*3=21", "21+2=23", "23-2=21"], 2, "Step 3: target already reached"),
])
def test_countdown_oracle_on_hand_cases(steps, first_error, feedback):
    oracle = build_critic("countdown-oracle", None, {}, None)
    [crit] = checked(oracle, [request(steps)])
    assert crit.first_error == first_error
    assert crit.passed == (first_error == -1)
    assert feedback in crit.feedback
    assert [v.score for v in crit.verdicts] == [1.0 if v.ok else 0.0 for v in crit.verdicts]


# ---------------------------------------------------------------- noisy critic


def noisy_requests(n: int = 40) -> list[CritiqueRequest]:
    return [request(["7*3=21", "21+2=23"] if i % 2 else ["7*3=20", "21+2=23"], f"s{i}")
            for i in range(n)]


def test_noisy_with_flip_prob_zero_is_its_base():
    reqs = noisy_requests()
    base = checked(build_critic("countdown-oracle", None, {}, None), reqs)
    noisy = checked(build_critic("noisy", None, {"flip_prob": 0.0}, None), reqs)
    assert [c.verdicts for c in noisy] == [c.verdicts for c in base]


def test_noisy_with_flip_prob_one_flips_every_verdict():
    reqs = noisy_requests()
    base = checked(build_critic("countdown-oracle", None, {}, None), reqs)
    noisy = checked(build_critic("noisy", None, {"flip_prob": 1.0}, None), reqs)
    for b, n in zip(base, noisy):
        assert [v.ok for v in n.verdicts] == [not v.ok for v in b.verdicts]
    assert noisy[0].critic == "noisy(countdown-oracle,p=1.0)"


def test_noisy_noise_depends_on_seed_and_sample_not_on_batching():
    reqs = noisy_requests()
    critic = build_critic("noisy", None, {"flip_prob": 0.5, "seed": 3}, None)
    together = [[v.ok for v in c.verdicts] for c in checked(critic, reqs)]
    one_by_one = [[v.ok for v in checked(critic, [r])[0].verdicts] for r in reqs]
    backwards = [[v.ok for v in c.verdicts] for c in checked(critic, reqs[::-1])][::-1]
    assert together == one_by_one == backwards
    other_seed = build_critic("noisy", None, {"flip_prob": 0.5, "seed": 4}, None)
    assert [[v.ok for v in c.verdicts] for c in checked(other_seed, reqs)] != together


def test_noisy_refuses_a_probability_outside_0_1():
    with pytest.raises(ValueError, match="flip_prob must be in"):
        build_critic("noisy", None, {"flip_prob": 1.5}, None)


# ---------------------------------------------------------------- lm critic: prompt and parser


def test_the_lm_prompt_numbers_the_steps_after_the_query():
    assert format_prompt("3 7 2 -> 23\n", ["7*3=21", "21+2=23"]) == (
        "3 7 2 -> 23\n1. 7*3=21\n2. 21+2=23\nVerdicts:\n")


def test_oracle_verdicts_written_for_training_parse_back_exactly():
    [crit] = checked(build_critic("countdown-oracle", None, {}, None),
                     [request(["7*3=21", "21+5=26", "26-3=23"])])
    text = format_verdicts(crit.verdicts)
    assert text.splitlines()[1] == "Step 2: incorrect — 5 is not available (have 2 21)"
    verdicts, unknown = parse_verdicts(text, 3)
    assert unknown == 0
    assert [(v.ok, v.feedback) for v in verdicts] == [(v.ok, v.feedback) for v in crit.verdicts]


U = None  # an unknown (unparsed) step
PARSE_CASES = [
    ("well formed", "Step 1: correct — ok\nStep 2: incorrect — 21+2=24 is wrong\n", 2, [True, False]),
    ("hyphen, colon and case", "STEP 1: CORRECT - fine\nstep 2: Incorrect: bad\n", 2, [True, False]),
    ("no spaces, no explanation", "Step 1:correct\nStep2 incorrect", 2, [True, False]),
    ("markdown", "**Step 1:** correct — ok\n- Step 2. incorrect — no\n", 2, [True, False]),
    ("missing line", "Step 1: correct — ok\n", 3, [True, U, U]),
    ("out of order", "Step 2: incorrect — x\nStep 1: correct — y\n", 2, [True, False]),
    ("numbers out of range", "Step 0: correct\nStep 3: incorrect\nStep 2: correct\n", 2, [U, True]),
    ("duplicate: first wins", "Step 1: incorrect — a\nStep 1: correct — b\n", 2, [False, U]),
    ("garbage", "%%% 7*3=21 }}\n\nStep one: correct\n", 2, [U, U]),
    ("cut off mid-line", "Step 1: correct — ok\nStep 2: inc", 2, [True, U]),
    ("a longer word is no verdict", "Step 1: correctness unclear\n", 1, [U]),
    ("empty", "", 2, [U, U]),
    ("no steps", "Step 1: correct\n", 0, []),
]


@pytest.mark.parametrize("text, num_steps, expected", [c[1:] for c in PARSE_CASES],
                         ids=[c[0] for c in PARSE_CASES])
def test_lm_parser_survives_malformed_output(text, num_steps, expected):
    verdicts, unknown = parse_verdicts(text, num_steps)
    assert [v.ok for v in verdicts] == expected
    assert unknown == expected.count(None)
    for v in verdicts:
        if v.ok is None:
            assert (v.score, v.feedback) == (0.5, "unparsed")
        else:
            assert v.score == (1.0 if v.ok else 0.0) and v.feedback


# ---------------------------------------------------------------- learned critics, end to end


TINY = CriticTrainConfig(
    num_samples=2, max_new_tokens=16, hidden_size=32, num_layers=1, num_heads=1,
    intermediate_size=64, prm_steps=4, prm_batch_size=8, lm_steps=4, lm_batch_size=8,
    max_explanation=8, max_length=128,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[dict, Path, CountdownTask]:
    """Both critics trained (barely: the point is that everything runs) on samples of an
    untrained tiny policy, with the result of `train_critics` and its output folder."""
    root = tmp_path_factory.mktemp("critics")
    tokenizer = build_char_tokenizer()
    policy = build_tiny_llama(TinyModelConfig(hidden_size=32, num_layers=1, num_heads=1,
                                              intermediate_size=64), len(tokenizer), tokenizer)
    policy.save_pretrained(root / "policy")
    tokenizer.save_pretrained(root / "policy")
    portable_tokenizer_config(root / "policy")
    task = CountdownTask(levels=(2, 3), train_per_level=4, test_per_level=1)
    result = train_critics(None, root / "out", base_model_path=str(root / "policy"), task=task,
                           settings=TINY)
    return result, root / "out", task


def test_train_critics_writes_both_critics_and_their_scores(trained):
    result, out, _ = trained
    on_disk = json.loads((out / "critic_eval.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    for name in ("prm", "lm"):
        scores = on_disk[name]
        assert {"precision", "recall", "f1", "accuracy", "unknown_rate"} <= set(scores)
        assert all(0.0 <= scores[k] <= 1.0 for k in ("precision", "recall", "f1", "accuracy"))
        assert scores["steps"] > 0
    assert (out / "prm" / "prm_head.pt").is_file() and (out / "prm" / "prm.json").is_file()
    assert (out / "lm" / "config.json").is_file() and (out / "lm" / "tokenizer.json").is_file()
    data = on_disk["data"]
    assert data["train_samples"] > 0 and data["heldout_samples"] > 0
    assert on_disk["settings"]["prm_steps"] == TINY.prm_steps


def hand_requests() -> list[CritiqueRequest]:
    return [request(["7*3=21", "21+2=23"], "a"), request(["7*3=20"], "b"),
            request(["1+1=2", "2+2=4", "4+4=8"], "c"), request([], "d")]


def test_lm_critic_from_the_registry_critiques_every_step(trained):
    _, out, task = trained
    critic = build_critic("lm", None, {"model_path": str(out / "lm"), "max_new_tokens": 24,
                                       "batch_size": 3}, task)
    assert isinstance(critic, Critic) and isinstance(critic, LMCritic)
    reqs = hand_requests()
    crits = checked(critic, reqs)
    assert [c.sample_id for c in crits] == ["a", "b", "c", "d"]
    for crit in crits:
        assert crit.critic == "lm" and isinstance(crit.raw_text, str)
        assert 0 < crit.tokens <= 24
        assert crit.extra["unknown_steps"] == sum(v.ok is None for v in crit.verdicts)
        assert crit.row()["critic_tokens"] == crit.tokens


def test_prm_critic_scores_every_step_the_same_in_any_batch(trained):
    _, out, task = trained
    critic = build_critic("prm", None, {"model_path": str(out / "prm"), "batch_size": 2}, task)
    reqs = hand_requests()
    crits = checked(critic, reqs)
    for crit in crits:
        assert all(0.0 <= v.score <= 1.0 for v in crit.verdicts)
        assert all(v.ok == (v.score >= critic.threshold) for v in crit.verdicts)
    alone = [checked(critic, [r])[0] for r in reqs]  # other padding, same scores
    for a, b in zip(crits, alone):
        assert [v.score for v in a.verdicts] == pytest.approx([v.score for v in b.verdicts], abs=1e-5)


def test_prm_threshold_decides_what_is_flagged(trained):
    _, out, task = trained
    lenient = build_critic("prm", None, {"model_path": str(out / "prm"), "threshold": 0.0}, task)
    strict = build_critic("prm", None, {"model_path": str(out / "prm"), "threshold": 1.01}, task)
    reqs = hand_requests()
    assert all(c.passed for c in checked(lenient, reqs))
    assert [c.first_error for c in checked(strict, reqs)] == [0, 0, 0, -1]


def test_prm_critic_on_a_folder_that_is_not_a_prm(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a PRM folder"):
        build_critic("prm", None, {"model_path": str(tmp_path)}, None)


def test_train_critics_checks_its_settings_first(tmp_path):
    """Settings built in Python are checked as a config file's `critic_train` is; a bad value
    fails before any work."""
    with pytest.raises(ConfigError, match="critic_train.init must be one of fresh, policy, got 'pretrained'"):
        train_critics(None, tmp_path, base_model_path=str(tmp_path / "none"), task=None,
                      settings=CriticTrainConfig(init="pretrained"))
    assert not (tmp_path / "critic_eval.json").exists()
