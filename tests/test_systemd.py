"""The systemd unit under a real systemd (issue 17, point 2): scripts/systemd-check boots a
Debian container with systemd-nspawn (systemd as PID 1), installs this checkout in it with
scripts/install and drives s3fuse@demo: READY once the mount answers (and the mount seen
outside the service), STATUS= lines, `systemctl stop` waiting for an upload under way,
Restart=on-failure after SIGKILL. The first run on a machine builds the container's image
with debootstrap (~3 min); later runs reuse it (~20 s)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.mounted
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(1500)
@pytest.mark.semantics("OPS-START")
def test_the_unit_under_a_real_systemd() -> None:
    r = subprocess.run([str(ROOT / "scripts" / "systemd-check")], capture_output=True,
                       text=True, timeout=1400)  # fmt: skip
    checks = [ln for ln in r.stdout.splitlines() if ln.startswith("[systemd-check] ")]
    assert r.returncode == 0, "\n".join(checks) + "\n" + r.stderr[-3000:]
    assert checks[-1] == "[systemd-check] all checks passed"
    assert sum(" ok   " in ln for ln in checks) == 8, checks
