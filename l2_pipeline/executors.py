"""Where a run's steps execute, chosen from the environment when the code location loads.

- `L2_EXECUTOR` unset, empty or `in_process` (the default): in the run's own process, one step
  after the other (`in_process_executor`; see `l2_pipeline.definitions`).
- `L2_EXECUTOR=celery`: each step is a Celery task, run by whichever worker takes it, on any host
  (dagster-celery, the `celery` extra; docs/DISTRIBUTED.md). The run's process hands its steps to
  the broker `L2_CELERY_BROKER` (e.g. `amqp://user:password@broker-host:5672//`) and collects their
  results from `L2_CELERY_BACKEND` (default `rpc://`: back through the broker). The workers run
  `celery -A l2_pipeline.celery_app worker` with the same variables, so that both sides build their
  Celery app from `celery_app_args` and agree on every setting of `CELERY_SETTINGS`.

Broker and backend reach Dagster as `env:` sources, resolved when a run starts, so the UI shows the
variable and not a password. An invalid choice stops the code location from loading, naming the
variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dagster import ExecutorDefinition, in_process_executor

EXECUTOR_ENV = "L2_EXECUTOR"
BROKER_ENV = "L2_CELERY_BROKER"
BACKEND_ENV = "L2_CELERY_BACKEND"
IN_PROCESS, CELERY = "in_process", "celery"
DEFAULT_BACKEND = "rpc://"
QUEUE = "dagster"  # dagster-celery's queue: the workers consume it (`-Q dagster`)

# What makes a worker that dies mid-step harmless: its step is run again by another worker, once.
CELERY_SETTINGS: dict[str, Any] = {
    # a step's message is acknowledged when the step has finished, not when it starts: while a worker
    # runs it, the broker still holds it, and hands it to another worker if this one's connection
    # drops (RabbitMQ does so at once; Redis after broker_transport_options.visibility_timeout)
    "task_acks_late": True,
    # a pool process killed mid-step (the OOM killer, a SIGKILL) puts its step back in the queue
    # instead of failing it
    "task_reject_on_worker_lost": True,
    # a worker process reserves only the step it runs: every other step waits in the queue for
    # whichever worker is free first
    "worker_prefetch_multiplier": 1,
    # a worker that loses the broker stops its running steps at once: the broker gives them to
    # another worker, and the same step never runs twice at the same time
    "worker_cancel_long_running_tasks_on_connection_loss": True,
    "broker_connection_retry_on_startup": True,
}


def executor_choice(environ: Mapping[str, str]) -> str:
    """`in_process` or `celery`, from `L2_EXECUTOR`; ValueError naming the variable otherwise."""
    choice = environ.get(EXECUTOR_ENV, "").strip() or IN_PROCESS
    if choice not in (IN_PROCESS, CELERY):
        raise ValueError(f"{EXECUTOR_ENV}={choice!r}: expected {IN_PROCESS!r} (the default) or {CELERY!r}")
    if choice == CELERY and not environ.get(BROKER_ENV, "").strip():
        raise ValueError(f"{EXECUTOR_ENV}={CELERY} needs {BROKER_ENV}, the broker's URL "
                         "(e.g. amqp://user:password@broker-host:5672//)")
    return choice


def celery_executor_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """The Celery executor's config: broker and (when set) backend as `env:` sources, the settings."""
    backend = {"env": BACKEND_ENV} if environ.get(BACKEND_ENV, "").strip() else DEFAULT_BACKEND
    return {"broker": {"env": BROKER_ENV}, "backend": backend, "config_source": CELERY_SETTINGS}


def executor_from_env(environ: Mapping[str, str] | None = None) -> ExecutorDefinition:
    """The code location's executor (see the module docstring); ValueError for an invalid setting."""
    env = os.environ if environ is None else environ
    if executor_choice(env) == IN_PROCESS:
        return in_process_executor
    try:
        from dagster_celery import celery_executor
    except ImportError:
        raise ValueError(f"{EXECUTOR_ENV}={CELERY} needs dagster-celery: pip install 'okx-l2[celery]'") from None
    return celery_executor.configured(celery_executor_config(env), name="celery")


def celery_app_args(environ: Mapping[str, str]) -> dict[str, Any]:
    """The workers' Celery app arguments: what the executor of `executor_from_env` builds its app from,
    with the broker and backend read from the same variables."""
    from dagster_celery.executor import CeleryExecutor

    executor_choice({**environ, EXECUTOR_ENV: CELERY})  # the broker must be set
    backend = environ.get(BACKEND_ENV, "").strip() or DEFAULT_BACKEND
    return CeleryExecutor.for_cli(broker=environ[BROKER_ENV], backend=backend,
                                  config_source=CELERY_SETTINGS).app_args()
