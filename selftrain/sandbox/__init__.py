"""A sandbox for programs a policy writes: each runs in its own process, forked from a warm
server, in fresh namespaces with a read-only root, no network and rlimits (docs/design.md,
"Code tasks and the sandbox")."""

from selftrain.sandbox.client import Sandbox, default_sandbox, execute, execute_many
from selftrain.sandbox.isolate import Limits
from selftrain.sandbox.result import STATUSES, ExecResult

__all__ = ["STATUSES", "ExecResult", "Limits", "Sandbox", "default_sandbox", "execute",
           "execute_many"]
