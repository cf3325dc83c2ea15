"""The Celery app of the workers that run the steps of `L2_EXECUTOR=celery` runs (docs/DISTRIBUTED.md):

    celery -A l2_pipeline.celery_app worker -Q dagster --concurrency 1 -n w1@%h

It is dagster-celery's own worker app (`dagster_celery.app`: one task, `execute_plan`, that loads the
run's instance and code location and runs one step) built from `l2_pipeline.executors.celery_app_args`,
so the broker, the backend and the redelivery settings are the ones the runs' executor uses. A
worker needs the variables the code location needs (`L2_*`, `AWS_*`, `DAGSTER_PG_*`): it loads the
code location itself, from the module the run names (`l2_pipeline.definitions`).
"""

from __future__ import annotations

import os

from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from l2_pipeline.executors import celery_app_args

app = make_app(celery_app_args(os.environ))
execute_plan = create_task(app)
