"""An independent POSIX conformance suite (pjdfstest) on s3fuse and its peers, one moto
server, one run: per area the cases each tool passes, and the share outside hard links
(link(2) is EPERM by design: S3 has no way for two keys to share an object).

    scripts/posix-suite --pjdfstest DIR [--tools s3fuse,s3fs] [--areas chmod,rename]

DIR is a pjdfstest checkout (https://github.com/pjd/pjdfstest; not downloaded here): it
is built in place when its binary is missing (autoconf, automake, a C compiler). The
suite runs as root on each mount with allow_other, in a fresh bucket per tool. Takes
some minutes per tool (rename alone has ~4,900 cases).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from backends import MotoBackend, Server  # beside this file
from bench import S3fs, S3fuse, Target

AREAS = [
    "chflags", "chmod", "chown", "ftruncate", "granular", "link", "mkdir", "mkfifo", "mknod",
    "open", "posix_fallocate", "rename", "rmdir", "symlink", "truncate", "unlink", "utimensat",
]  # fmt: skip
AREA_TIMEOUT = 1800  # seconds


class S3fuseShared(S3fuse):
    extra = ("-o", "allow_other")


class S3fsShared(S3fs):
    def command(self, bucket: str, d: Path, mnt: Path) -> tuple[list[str], dict[str, str]]:
        cmd, env = super().command(bucket, d, mnt)
        return [*cmd, "-o", "allow_other"], env


TOOLS: dict[str, type[Target]] = {"s3fuse": S3fuseShared, "s3fs": S3fsShared}


@dataclass
class Tally:
    cases: int = 0
    failed: int = 0

    @property
    def passed(self) -> int:
        return self.cases - self.failed


def tally(prove_output: str) -> Tally:
    """Cases and failures from prove's summary; a script that stopped early counts the
    cases it planned and never ran as failed."""
    m = re.search(r"Files=\d+, Tests=(\d+)", prove_output)
    t = Tally(cases=int(m.group(1)) if m else 0)
    t.failed = sum(int(n) for n in re.findall(r"Tests: \d+ Failed: (\d+)\)", prove_output))
    for planned, ran in re.findall(r"You planned (\d+) tests? but ran (\d+)", prove_output):
        t.cases += int(planned) - int(ran)
        t.failed += int(planned) - int(ran)
    return t


def build(suite: Path) -> Path:
    binary = suite / "pjdfstest"
    if not binary.exists():
        print(f"building {binary} ...", flush=True)
        for cmd in (["autoreconf", "-ifs"], ["./configure"], ["make", "pjdfstest"]):
            subprocess.run(cmd, cwd=suite, check=True, capture_output=True)
    return binary


def run_tool(
    tool: Target, server: Server, suite: Path, areas: list[str], out: Path
) -> dict[str, Tally]:
    bucket = server.bucket()
    mnt = tool.mount(bucket)
    os.chmod(mnt.parent, 0o755)  # the suite's checks as other users must reach the mount
    results: dict[str, Tally] = {}
    try:
        for area in areas:
            r = subprocess.run(["prove", "-r", str(suite / "tests" / area)], cwd=mnt,
                               capture_output=True, text=True, timeout=AREA_TIMEOUT)  # fmt: skip
            (out / f"{tool.name}.{area}.txt").write_text(r.stdout + r.stderr)
            results[area] = tally(r.stdout)
            t = results[area]
            print(f"  {tool.name:8} {area:16} {t.passed:5}/{t.cases:5}", flush=True)
    finally:
        tool.unmount()
    return results


def share(ts: list[Tally]) -> str:
    cases = sum(t.cases for t in ts)
    return f"{100 * sum(t.passed for t in ts) / cases:5.1f}%" if cases else "   - "


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pjdfstest", type=Path, required=True, help="a pjdfstest checkout")
    ap.add_argument("--tools", default="s3fuse,s3fs", help="comma separated: s3fuse,s3fs")
    ap.add_argument("--areas", default=",".join(AREAS), help="comma separated")
    ap.add_argument("--out", type=Path, default=None, help="where prove's output goes")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("posix-suite: run as root (the suite changes owners and makes devices)")
        return 2
    if shutil.which("prove") is None:
        print("posix-suite: prove (perl) is missing: apt-get install perl")
        return 2
    suite = args.pjdfstest.resolve()
    build(suite)
    areas = args.areas.split(",")
    work = Path(tempfile.mkdtemp(prefix="s3fuse-posix-suite-"))
    os.chmod(work, 0o755)  # other users of the suite reach the mounts
    out = args.out or work / "output"
    out.mkdir(parents=True, exist_ok=True)
    server = MotoBackend(work)
    table: dict[str, dict[str, Tally]] = {}
    try:
        for name in args.tools.split(","):
            tool = TOOLS[name](server, work)
            why = tool.available()
            if why:
                print(f"{name}: skipped ({why})")
                continue
            table[name] = run_tool(tool, server, suite, areas, out)
    finally:
        server.stop()
    names = list(table)
    print("\narea              " + "".join(f"{n:>14}" for n in names))
    for area in areas:
        cells = [table[n][area] for n in names]
        print(f"{area:17} " + "".join(f"{t.passed:6}/{t.cases:<6} " for t in cells))
    print("all               " + "".join(f"{share(list(table[n].values())):>14}" for n in names))
    outside = [share([t for a, t in table[n].items() if a != "link"]) for n in names]
    print("outside link      " + "".join(f"{v:>14}" for v in outside))
    print(f"\nprove's output: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
