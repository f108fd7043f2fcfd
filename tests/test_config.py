"""Config loading: YAML + key=value overrides into typed dataclasses, and errors that name the
key and the file (exit code 2 at the command line)."""

from pathlib import Path

import pytest

from selftrain.cli import main
from selftrain.config import ConfigError, dump_yaml, load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_become_typed_values(tmp_path):
    path = write(tmp_path, "experiment: e\nrounds: 2\nrollout: {num_samples: 4}\n")
    cfg = load_config(path, ["rounds=5", "rollout.temperature=0.7", "arm.per_query_cap=3",
                             "task.args.train_per_level=10"])
    assert cfg.rounds == 5
    assert cfg.rollout.num_samples == 4
    assert cfg.rollout.temperature == 0.7
    assert cfg.arm.per_query_cap == 3
    assert cfg.task.args == {"train_per_level": 10}
    # the resolved config round-trips through YAML
    again = write(tmp_path, dump_yaml(cfg))
    assert load_config(again) == cfg


def test_int_is_accepted_where_a_float_is_expected(tmp_path):
    cfg = load_config(write(tmp_path, "rollout: {temperature: 1}\n"))
    assert cfg.rollout.temperature == 1.0 and isinstance(cfg.rollout.temperature, float)


def test_exponent_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 reads `3e-4` as a string; a float key takes it as the number it means."""
    cfg = load_config(write(tmp_path, "train: {lr: 3e-4}\n"), ["train.weight_decay=1e-2"])
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.train.weight_decay == pytest.approx(0.01)


@pytest.mark.parametrize(
    "text, overrides, needle",
    [
        ("rounds: 2\nrolout: {num_samples: 4}\n", [], "unknown key rolout"),
        ("rollout: {num_sample: 4}\n", [], "unknown key rollout.num_sample"),
        ("rounds: three\n", [], "key rounds must be an integer"),
        ("rollout: {temperature: hot}\n", [], "key rollout.temperature must be a number"),
        ("arm: {dedup: 1}\n", [], "key arm.dedup must be true or false"),
        ("model: {tiny: {tokenizer: word}}\n", [], "key model.tiny.tokenizer must be one of char, bpe"),
        ("train: {resources: {placement_strategy: pack}}\n", [],
         "key train.resources.placement_strategy must be one of PACK, SPREAD, STRICT_PACK"),
        ("tracking: {mode: on}\n", [], "key tracking.mode must be one of offline, online, disabled"),
        ("experiment: e\n", ["rollout.nope=3"], "unknown key rollout.nope"),
        ("experiment: e\n", ["rounds"], "expected key=value"),
        ("experiment: e\n", ["experiment=null"], "key experiment is required"),
        ("eval: {num_samples: 2, pass_k: [1, 4]}\n", [], "eval.pass_k has 4"),
        ("- a\n- b\n", [], "top level must be a mapping"),
        ("rounds: [\n", [], "not valid YAML"),
    ],
)
def test_bad_configs_name_the_key_and_the_file(tmp_path, text, overrides, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_cli_exits_2_on_a_bad_config(tmp_path, capsys):
    path = write(tmp_path, "rounds: 2\nrolout: {}\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown key rolout" in err and str(path) in err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_takes_overrides_after_a_flag(tmp_path, capsys):
    """`compare cfg.yaml --overwrite rounds=x`: argparse leaves `rounds=x` over; it is still an
    override (here a bad one, so the run stops at the config with exit 2), and a stray flag is
    still a usage error."""
    path = write(tmp_path, "rounds: 2\n")
    assert main(["compare", str(path), "--overwrite", "rounds=x"]) == 2
    assert "key rounds must be an integer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(path), "--overwrite", "--bogus"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_cli_help_is_complete(capsys):
    for argv in (["--help"], ["run", "--help"], ["compare", "--help"], ["verify", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
    out = capsys.readouterr().out
    for word in ("run", "compare", "verify", "--resume", "overrides", "exit codes"):
        assert word in out


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(path):
    from selftrain.experiments.plan import arm_configs

    cfg = load_config(path)
    assert arm_configs(cfg)  # every arm's overrides apply and validate too


def test_critic_train_is_a_typed_section(tmp_path):
    """`critic_train` is checked like every other section: an unknown key or a bad choice
    stops at the config, and its values arrive typed."""
    cfg = load_config(write(tmp_path, "critic_train: {oracle: countdown-oracle, prm_lr: 1e-3}\n"),
                      ["critic_train.init=policy"])
    assert cfg.critic_train.oracle == "countdown-oracle"
    assert cfg.critic_train.prm_lr == pytest.approx(1e-3) and cfg.critic_train.init == "policy"
    for text, needle in [("critic_train: {out_dir: x}\n", "unknown key critic_train.out_dir"),
                         ("critic_train: {init: pretrained}\n",
                          "key critic_train.init must be one of fresh, policy, got 'pretrained'"),
                         ("critic_train: {prm_steps: many}\n",
                          "key critic_train.prm_steps must be an integer"),
                         ("critic_train: {num_samples: 0}\n",
                          "key critic_train.num_samples must be positive")]:
        with pytest.raises(ConfigError, match=needle):
            load_config(write(tmp_path, text))


def test_a_section_built_in_python_is_checked_like_a_file():
    from selftrain.config import CriticTrainConfig, checked_section

    good = CriticTrainConfig(num_samples=2)
    assert checked_section(good, "critic_train", "test") == good
    with pytest.raises(ConfigError, match="test: key critic_train.init must be one of fresh, policy"):
        checked_section(CriticTrainConfig(init="pretrained"), "critic_train", "test")


def test_malformed_yaml_is_one_line_naming_file_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: 2\nrollout:\n  num_samples: 4\n   temperature: 0.7\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"{bad}:4:") and "not valid YAML" in str(err.value)
    assert main(["run", str(bad)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
