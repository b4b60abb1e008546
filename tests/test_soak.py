"""The short form of the chaos soak (tests/soak.py; the long form is scripts/soak): about
30 s per server of faults, three writers and SIGKILL + remount cycles, then the bucket is
checked directly. Any lost, corrupted or partial file, bad read or upload left open fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import soak
from tests.conftest import Backend

pytestmark = pytest.mark.mounted


@pytest.mark.semantics("LOST-SOAK")
def test_short_soak(backend: Backend, tmp_path: Path) -> None:
    res = soak.run(
        backend, tmp_path, seconds=30, seed=20261201, workers=3, kill_every=(12, 18),
        max_size=12 * soak.MiB,
    )  # fmt: skip
    print(res.line())
    assert res.kills >= 1 and res.counts["close_ok"] > 100, res.line()
    assert sum(res.faults.values()) > 20, res.line()
    assert res.ok, "\n".join([res.line(), *res.problems[:20]])
