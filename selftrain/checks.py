"""Everything that can be checked before Ray starts, so bad input fails in seconds (exit 2)."""

from __future__ import annotations

from selftrain.config import Config, ConfigError


def preflight(cfg: Config, source: str) -> None:
    """Task buildable, model resolvable, critic loadable, run_root reachable; raises
    ConfigError/CriticLoadError."""
    from critics import PreflightCheck, build_critic
    from selftrain.storage import storage_for
    from selftrain.task_args import check_task_args
    from selftrain.tasks import TASKS, abilities, make_task

    try:
        storage_for(cfg.run_root, cfg.staging_dir).check()
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from err

    if cfg.task.name in TASKS:
        check_task_args(TASKS[cfg.task.name], cfg.task.args, source)
    try:
        task = make_task(cfg.task.name, **cfg.task.args)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: task {cfg.task.name!r} with task.args "
                          f"{cfg.task.args}: {err}") from err
    if cfg.model.path is not None:
        from selftrain.model_source import check_named_model

        try:
            check_named_model(cfg.model.path)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from err
    if cfg.arm.name == "critique":
        critic = build_critic(cfg.critic.name, cfg.critic.path, cfg.critic.args, task)
        if isinstance(critic, PreflightCheck):  # e.g. a served critic's endpoint is reachable
            critic.check()
    checker = abilities(task).input_check
    if checker is not None:  # tasks that read files check their columns here
        checker.check()
