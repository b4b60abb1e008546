"""scripts/systemd-check's work (see there): a systemd-nspawn container, s3fuse installed
in it, s3fuse@demo driven against moto on the host."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import boto3  # noqa: E402

from tests.servers import MotoServer, RecordingProxy  # noqa: E402

IMAGE = Path(os.environ.get("S3FUSE_SYSTEMD_IMAGE", "/var/tmp/s3fuse-systemd-image"))
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def say(text: str) -> None:
    print(f"[systemd-check] {text}", flush=True)


def mirror() -> str:
    for f in glob.glob("/etc/apt/sources.list.d/*.sources"):
        for line in Path(f).read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    for line in Path("/etc/apt/sources.list").read_text().splitlines():
        if line.startswith("deb "):
            return line.split()[1]
    return "http://deb.debian.org/debian"


def build_image() -> None:
    if (IMAGE / "lib/systemd/systemd").exists():
        say(f"image {IMAGE} (built before)")
        return
    say(f"building the image {IMAGE} with debootstrap (a few minutes, once)")
    shutil.rmtree(IMAGE, ignore_errors=True)
    include = "systemd,systemd-sysv,dbus,ca-certificates,python3,python3-venv"
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={include}", "bookworm",
                    str(IMAGE), mirror()], check=True, stdout=subprocess.DEVNULL)  # fmt: skip


def copy_checkout() -> None:
    dest = IMAGE / "root/project"
    shutil.rmtree(dest, ignore_errors=True)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        src, out = ROOT / name, dest / name
        if src.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)
    for f in ("/etc/resolv.conf", "/etc/ssl/certs/ca-certificates.crt"):
        shutil.copy(f, IMAGE / f.lstrip("/"))


def children(pid: int) -> list[int]:
    """Processes whose parent is pid (from /proc: procps may not be installed)."""
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.split("/")[2]))
    return sorted(out)


def cgroups() -> list[str]:
    """systemd-nspawn needs the cgroup file systems under /sys/fs/cgroup. A chroot whose
    /sys was bound without its submounts (the fresh-machine one) has an empty directory
    there: mount the hierarchies this kernel runs (the host's systemd hierarchy and the
    unified one) again. Returns what was mounted, for unmounting afterwards."""
    if os.path.ismount("/sys/fs/cgroup"):
        return []
    mounted = []
    steps = [
        (["-t", "tmpfs", "-o", "mode=755", "tmpfs"], "/sys/fs/cgroup"),
        (["-t", "cgroup2", "cgroup2"], "/sys/fs/cgroup/unified"),
        (["-t", "cgroup", "-o", "none,name=systemd", "cgroup"], "/sys/fs/cgroup/systemd"),
    ]
    for args, where in steps:
        os.makedirs(where, exist_ok=True)
        subprocess.run(["mount", *args, where], check=True)
        mounted.append(where)
    say("mounted the cgroup hierarchies under /sys/fs/cgroup (this /sys came without them)")
    return mounted


class Container:
    def __init__(self) -> None:
        self.log = IMAGE.parent / (IMAGE.name + ".console.log")
        with open(self.log, "wb") as console:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "-D", str(IMAGE), "--boot", "--register=no",
                 "--keep-unit", "--console=pipe", "--bind=/dev/fuse",
                 "--capability=CAP_SYS_ADMIN"],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            self.boot()
        except BaseException:
            if self.proc.poll() is None:  # never leave the container running
                self.proc.kill()
                self.proc.wait()
            raise

    def boot(self) -> None:
        deadline = time.monotonic() + 120
        self.init, state = 0, "(no answer)"
        while time.monotonic() < deadline and self.proc.poll() is None:
            kids = children(self.proc.pid)
            if kids:
                self.init = kids[0]
                state = self.run("systemctl is-system-running", check=False) or "(no answer)"
                if state in ("running", "degraded"):
                    return
            time.sleep(0.5)
        tail = self.log.read_text(errors="replace")[-3000:] + "\n" + self.tree(self.proc.pid)
        tail += "\n" + self.run("systemctl is-system-running 2>&1; ls -la /run/systemd | head",
                                 check=False)  # fmt: skip
        why = f"exit {self.proc.poll()}, last state {state!r}"
        raise RuntimeError(f"the container's systemd did not come up ({why}); console:\n{tail}")

    @staticmethod
    def tree(pid: int, depth: int = 0) -> str:
        """pid and its descendants with their commands (for a report)."""
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            comm = "?"
        lines = [f"{'  ' * depth}{pid} {comm}"]
        for kid in children(pid):
            lines.append(Container.tree(kid, depth + 1))
        return "\n".join(lines)

    def run(self, cmd: str, *, check: bool = True, timeout: float = 300) -> str:
        r = subprocess.run(
            ["nsenter", "-t", str(self.init), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--",
             "/usr/bin/env", "-i", PATH, "HOME=/root", "LANG=C.UTF-8",
             "PIP_CERT=/etc/ssl/certs/ca-certificates.crt", "DEBIAN_FRONTEND=noninteractive",
             "bash", "-c", cmd],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and r.returncode != 0:
            raise RuntimeError(f"in the container: {cmd}: exit {r.returncode}\n"
                               f"{r.stdout}{r.stderr}")  # fmt: skip
        return r.stdout.strip()

    def show(self, *props: str) -> dict[str, str]:
        out = self.run(f"systemctl show -p {','.join(props)} s3fuse@demo")
        return dict(line.split("=", 1) for line in out.splitlines())

    def stop(self) -> None:
        self.run("systemctl poweroff", check=False, timeout=30)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def unmount(mounted: list[str]) -> None:
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", where], check=False)


def check(what: str, ok: bool, detail: Any = "") -> None:
    say(f"{'ok  ' if ok else 'FAIL'} {what} {detail}")
    if not ok:
        raise SystemExit(1)


def main() -> int:
    if os.geteuid() != 0:
        say("run as root (systemd-nspawn, mounts)")
        return 1
    os.environ.pop("AWS_CA_BUNDLE", None)
    build_image()
    copy_checkout()
    moto = MotoServer().start()
    proxy = RecordingProxy(moto.url)
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1",
                      aws_access_key_id="k", aws_secret_access_key="s")  # fmt: skip
    s3.create_bucket(Bucket="demo-bucket")
    # left enabled by a run that was interrupted: it would start at boot, before the install
    for link in glob.glob(str(IMAGE / "etc/systemd/system/*.wants/s3fuse@*.service")):
        os.unlink(link)
    (IMAGE / "etc/s3fuse").mkdir(parents=True, exist_ok=True)
    (IMAGE / "etc/s3fuse/demo.conf").write_text(
        f"S3FUSE_BUCKET=demo-bucket\nS3FUSE_MOUNTPOINT=/mnt/demo\n"
        f"S3FUSE_OPTIONS=-o endpoint_url={proxy.url}\n"
        "AWS_ACCESS_KEY_ID=k\nAWS_SECRET_ACCESS_KEY=s\n"
    )
    say("booting the container")
    mounted = cgroups()
    try:
        c = Container()
    except BaseException:
        unmount(mounted)
        proxy.close()
        moto.stop()
        raise
    try:
        say(f"systemd {c.run('systemctl --version | head -1')} is PID 1 in the container")
        say("scripts/install in the container")
        c.run("cd /root/project && scripts/install", timeout=900)
        try:
            c.run("systemctl enable --now s3fuse@demo")  # returns once the unit sent READY=1
        except RuntimeError:
            print(c.run("journalctl -u s3fuse@demo --no-pager | tail -30", check=False))
            raise
        check("enabled for boot", c.run("systemctl is-enabled s3fuse@demo") == "enabled")
        check("READY only once the mount answers",
              c.run("findmnt -n -o FSTYPE /mnt/demo", check=False) == "fuse.s3fuse")  # fmt: skip
        c.run("echo hello > /mnt/demo/hello.txt")
        body = s3.get_object(Bucket="demo-bucket", Key="hello.txt")["Body"].read()
        check("a file written outside the service is stored", body == b"hello\n")
        time.sleep(1.5)
        status = c.show("StatusText")["StatusText"]
        check("STATUS= line", "upload(s) pending" in status, repr(status))

        held: list[str] = []

        def hold_big_put(r: Any) -> Any:
            if r.method == "PUT" and r.key_path.endswith("/big.bin") and not held:
                held.append(r.path)
                return ("stall", 4.0)
            return None

        proxy.fault = hold_big_put
        big = "head -c 3000000 /dev/urandom > /mnt/demo/big.bin"
        writer = threading.Thread(target=c.run, args=(big,), kwargs={"check": False})
        writer.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        c.run("systemctl stop s3fuse@demo")
        took = time.monotonic() - t0
        writer.join()
        proxy.fault = None
        size = s3.head_object(Bucket="demo-bucket", Key="big.bin")["ContentLength"]
        check("systemctl stop waits for the upload under way", bool(held) and size == 3_000_000,
              f"({took:.1f} s; stored {size} bytes)")  # fmt: skip

        c.run("systemctl start s3fuse@demo")
        old = c.show("MainPID")["MainPID"]
        c.run("systemctl kill -s KILL s3fuse@demo")
        deadline = time.monotonic() + 30
        state: dict[str, str] = {}
        while time.monotonic() < deadline:
            state = c.show("ActiveState", "NRestarts", "MainPID")
            if state["ActiveState"] == "active" and state["MainPID"] not in ("0", old):
                break
            time.sleep(0.5)
        check("Restart=on-failure after SIGKILL", state.get("ActiveState") == "active"
              and state.get("NRestarts") == "1", state)  # fmt: skip
        check("the restarted mount serves the files",
              c.run("cat /mnt/demo/hello.txt", check=False) == "hello")  # fmt: skip
        journal = c.run("journalctl -u s3fuse@demo --no-pager", check=False)
        check("the dead daemon's mount was taken over", "daemon that died" in journal)
        c.run("systemctl disable --now s3fuse@demo", check=False)  # the image stays clean
    finally:
        c.stop()
        unmount(mounted)
        proxy.close()
        moto.stop()
    say("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
