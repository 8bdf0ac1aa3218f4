from __future__ import annotations

import pytest

from bench.fixtures import big_ledger


@pytest.fixture(scope="session")
def million_sku_ledger():
    return big_ledger(1_000_000, 16)
