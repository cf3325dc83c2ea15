"""The executor the code location picks from the environment (`l2_pipeline.executors`): in process by
default, Celery with `L2_EXECUTOR=celery`; a wrong setting is one error naming the variable."""

from __future__ import annotations

import pytest
from dagster import in_process_executor

from l2_pipeline.executors import CELERY_SETTINGS, celery_app_args, celery_executor_config, executor_from_env


def test_the_default_is_in_process() -> None:
    assert executor_from_env({}) is in_process_executor
    assert executor_from_env({"L2_EXECUTOR": "in_process"}) is in_process_executor


@pytest.mark.parametrize(("environ", "message"), [
    ({"L2_EXECUTOR": "dask"}, "L2_EXECUTOR='dask': expected 'in_process'"),
    ({"L2_EXECUTOR": "celery"}, "L2_EXECUTOR=celery needs L2_CELERY_BROKER"),
    ({"L2_EXECUTOR": "celery", "L2_CELERY_BROKER": " "}, "needs L2_CELERY_BROKER"),
])
def test_a_wrong_setting_names_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        executor_from_env(environ)


def test_the_runs_and_the_workers_build_the_same_celery_app() -> None:
    pytest.importorskip("dagster_celery")
    environ = {"L2_EXECUTOR": "celery", "L2_CELERY_BROKER": "amqp://u:secret@broker:5672//"}
    assert executor_from_env(environ).name == "celery"
    config = celery_executor_config(environ)
    assert config == {"broker": {"env": "L2_CELERY_BROKER"},  # resolved when a run starts: no password copied
                      "backend": "rpc://", "config_source": CELERY_SETTINGS}
    assert celery_executor_config({**environ, "L2_CELERY_BACKEND": "redis://r"})["backend"] == \
        {"env": "L2_CELERY_BACKEND"}
    args = celery_app_args(environ)  # the workers' app
    assert (args["broker"], args["backend"]) == ("amqp://u:secret@broker:5672//", "rpc://")
    assert {k: getattr(args["config_source"], k) for k in CELERY_SETTINGS} == CELERY_SETTINGS
    assert celery_app_args({**environ, "L2_CELERY_BACKEND": "redis://r"})["backend"] == "redis://r"
