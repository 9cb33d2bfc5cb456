"""Suite-wide pytest wiring.

When a test that used a real server (any ``ServerProcess`` fixture value) fails, the server's
output and log files are attached to the failure report, so a failure on CI explains itself.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.support.server import ServerProcess


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    for name, value in funcargs.items():
        if isinstance(value, ServerProcess):
            report.sections.append((f"torchwick server log ({name})", value.logs()[-20000:]))
