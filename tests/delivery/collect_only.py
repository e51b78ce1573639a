"""A pytest plugin for the rehearsal of the merge-request jobs: collect the tests, run none.

`.ci/run` runs the suite once (`make test`); the rehearsal of the GitLab jobs
(tests/delivery/pipeline_jobs.py) proves that each job sets itself up from a cold cache with only
its image's tools and selects its tests, without running them a second time. The jobs' scripts
set PYTEST_ADDOPTS themselves, so the rehearsal loads this plugin through PYTEST_PLUGINS instead
(https://docs.pytest.org/en/stable/how-to/plugins.html, "PYTEST_PLUGINS"). Collection still
imports every test module and fixture module and applies the job's markers; pytest exits 5 when
a job's selection is empty, which fails the job.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.option.collectonly = True
