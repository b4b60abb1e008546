"""The spool journal's format: appended records, torn and failed appends, old journals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from s3fuse.spool import journal
from s3fuse.spool.entry import CLEAN, CLOSING, OPEN
from s3fuse.spool.spool import Spool
from tests.servers import RecordingProxy
from tests.test_store import make_store

OPEN_REC = {"key": "a", "state": OPEN, "headers": {}}
CLOSING_REC = {"key": "a", "state": CLOSING, "headers": {"Metadata": {"mode": "33188"}}}


def test_the_last_complete_record_is_the_state(tmp_path: Path) -> None:
    p = str(tmp_path / "j.json")
    journal.write_new(p, journal.encode(OPEN_REC))
    assert journal.read(p) == OPEN_REC
    size = journal.append(p, journal.encode(CLOSING_REC))
    assert size == os.path.getsize(p)
    assert journal.read(p) == CLOSING_REC
    # a record a crash cut short (no newline) leaves the state before it
    whole = journal.encode(OPEN_REC)
    with open(p, "ab") as f:
        f.write(whole[: len(whole) // 2])
    assert journal.read(p) == CLOSING_REC


def test_journals_of_the_old_format_and_unreadable_ones(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps(CLOSING_REC))  # one object, no newline
    assert journal.read(str(old)) == CLOSING_REC
    for raw in (b"", b'{"key": "a", "sta', b"[1, 2]\n", b"\n\n"):
        with pytest.raises(ValueError):
            journal.parse(raw)


def test_a_failed_append_leaves_the_journal_as_it_was(tmp_path: Path) -> None:
    """A short append (here: the file size limit falls inside the record) is cut off
    again, so the next record does not join it and the journal still reads 'closing'."""
    p = tmp_path / "j.json"
    journal.write_new(str(p), journal.encode(CLOSING_REC))
    limit = p.stat().st_size + 10
    script = (
        "import resource, signal, sys\n"
        "from s3fuse.spool import journal\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "try:\n"
        f"    journal.append({str(p)!r}, journal.encode({OPEN_REC!r}))\n"
        "except OSError as e:\n"
        "    print('failed', e.errno)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert out.stdout.startswith("failed"), out.stdout + out.stderr
    assert p.stat().st_size == limit - 10, "the partial record was cut off"
    journal.append(str(p), journal.encode(OPEN_REC))
    assert journal.read(str(p)) == OPEN_REC


def test_an_entry_appends_its_states_and_compacts_a_long_journal(
    tmp_path: Path, proxy: RecordingProxy, bucket: str, s3: Any
) -> None:
    spool = Spool(str(tmp_path / "sp"), make_store(proxy.url, bucket))
    spool.open()
    e = spool.new("k")
    trio.run(e.write, 0, b"bytes")
    e.set_state(CLOSING, {"Metadata": {"mode": "33188"}})
    lines = Path(e.journal_path).read_bytes().splitlines()
    assert [json.loads(x)["state"] for x in lines] == [OPEN, CLOSING]
    rename_rec = len(journal.encode({"key": "k", "state": OPEN, "time": 0.0,
                                     "headers": {}, "conditions": {}}))  # fmt: skip
    for _ in range(journal.COMPACT_AT // rename_rec + 2):
        e.set_state(OPEN)  # what a rename of an open file does
    assert os.path.getsize(e.journal_path) <= journal.COMPACT_AT
    assert journal.read(e.journal_path)["state"] == OPEN
    assert not os.path.exists(e.journal_path + ".tmp")
    e.set_state(CLEAN)
    assert not os.path.exists(e.journal_path)
    e.close()
    spool.close()


@pytest.mark.semantics("LOST-CRASH")
def test_recovery_reads_appended_journals(
    tmp_path: Path, proxy: RecordingProxy, bucket: str, s3: Any
) -> None:
    """Closing, then a torn 'open' after it: uploaded. Open, then a torn 'closing':
    moved to recovered/, never uploaded."""
    store = make_store(proxy.url, bucket)
    spool = Spool(str(tmp_path / "sp"), store, retry_window=0)
    spool.open()
    closed, opened = spool.new("closed"), spool.new("opened")
    for e in (closed, opened):
        trio.run(e.write, 0, e.key.encode())
    closed.set_state(CLOSING, {})
    for e, torn in ((closed, OPEN_REC), (opened, CLOSING_REC)):
        whole = journal.encode(torn)
        with open(e.journal_path, "ab") as f:
            f.write(whole[:-5])
        e.close_fd()
    spool.close()
    again = Spool(str(tmp_path / "sp"), store, retry_window=0)
    again.open()
    rec = trio.run(again.recover)
    assert rec.uploaded == ["closed"]
    assert s3.get_object(Bucket=bucket, Key="closed")["Body"].read() == b"closed"
    assert len(rec.moved) == 1 and Path(rec.moved[0]).read_bytes() == b"opened"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="opened")
    again.close()
