"""Everything that can be checked before Ray starts, so bad input fails in seconds (exit 2)."""

from __future__ import annotations

from selftrain.arms.arm import Arm
from selftrain.arms.registry import FILTERS, SAMPLINGS
from selftrain.backends import BACKENDS
from selftrain.config import Config, ConfigError
from selftrain.registry import RegistryError
from selftrain.train.objectives import OBJECTIVES


def preflight(cfg: Config, source: str) -> None:
    """Task buildable, model resolvable, critic loadable, run_root reachable; raises
    ConfigError/CriticLoadError."""
    from critics import PreflightCheck, build_critic
    from selftrain.runfolder.storage import storage_for
    from selftrain.tasks import TASKS, TaskLoadError, abilities, build_task
    from selftrain.tasks.args import check_task_args

    try:
        storage_for(cfg.run_root, cfg.staging_dir).check()
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from err

    try:
        check_task_args(TASKS.resolve(cfg.task.name, cfg.task.path), cfg.task.args, source)
        task = build_task(cfg.task.name, cfg.task.path, cfg.task.args)
    except TaskLoadError as err:
        raise ConfigError(f"{source}: {err}") from err
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: task {cfg.task.path or cfg.task.name!r} with task.args "
                          f"{cfg.task.args}: {err}") from err
    if cfg.model.path is not None:
        from selftrain.models.source import check_named_model

        try:
            check_named_model(cfg.model.path)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from err
    arm = checked_arm(cfg, source)
    if arm.needs_critic and not (cfg.critic.name or cfg.critic.path):
        raise ConfigError(f"{source}: arm.name {cfg.arm.name} needs critic.name or critic.path")
    if arm.needs_critic:
        critic = build_critic(cfg.critic.name, cfg.critic.path, cfg.critic.args, task)
        if isinstance(critic, PreflightCheck):  # e.g. a served critic's endpoint is reachable
            critic.check()
    from selftrain.judges import JudgeLoadError, build_judge
    from selftrain.metrics.policy import POLICY_METRICS

    if POLICY_METRICS - set(cfg.metrics.disabled):  # the judge of the policy's class figures
        try:
            build_judge(cfg.judge.name, cfg.judge.path, cfg.judge.args, task)
        except JudgeLoadError as err:
            raise ConfigError(f"{source}: {err}") from err
    checker = abilities(task).input_check
    if checker is not None:  # tasks that read files check their columns here
        checker.check()


def checked_arm(cfg: Config, source: str) -> Arm:
    """The arm built from `cfg.arm`, after every plug-in name of the config (filter, sampling,
    backend) is one its registry knows: built-in, registered or an entry point."""
    for key, value, registry in (("arm.name", cfg.arm.name, FILTERS),
                                 ("arm.sampling", cfg.arm.sampling, SAMPLINGS),
                                 ("rollout.backend", cfg.rollout.backend, BACKENDS),
                                 ("train.objective", cfg.train.objective, OBJECTIVES)):
        if value not in registry.names():
            raise ConfigError(f"{source}: key {key} must be one of {', '.join(registry.names())}, "
                              f"got {value!r}")
    try:
        return Arm.of(cfg.arm)
    except RegistryError as err:
        raise ConfigError(f"{source}: {err}") from err
