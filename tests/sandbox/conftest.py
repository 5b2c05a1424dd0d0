"""Sandbox tests: one lab (a real systemd host) per test session, dtenant installed in it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtenant_session import testimage
from dtenant_session.lab import host

CHECKOUT = Path(__file__).resolve().parents[2]
LAB_NAME = "pytest"
ACCOUNTS = ("alice", "bob")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "sandbox" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.sandbox)


@pytest.fixture(scope="session")
def lab() -> Iterator[host.Lab]:
    """A booted lab with dtenant installed from this checkout and test accounts."""
    if os.geteuid() != 0:
        pytest.fail("sandbox tests boot a lab and must run as root")
    booted = host.up(LAB_NAME, binds=[CHECKOUT])
    try:
        booted.run([str(CHECKOUT / "packaging" / "install.sh")])
        booted.run(testimage.import_argv(), input=testimage.build())
        for account in ACCOUNTS:
            booted.add_account(account)
        yield booted
    finally:
        host.down(LAB_NAME)
