"""Monitoring gaps from the heartbeat file, and the spool directory lock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from telemetryd.history.liveness import LastRun, Liveness, SpoolDirectoryBusy, gap_since


def test_first_run_has_no_gap(tmp_path: Path) -> None:
    """An empty spool directory has no last run, and no last run means no monitoring gap."""
    beat = Liveness(tmp_path, "0/1")
    assert beat.last_run() is None
    assert gap_since(None, 1000.0) is None


def test_clean_stop_and_crash_give_gaps_from_the_last_sign_of_life(tmp_path: Path) -> None:
    """A gap spans last heartbeat to new start with the shard; the reason is a crash unless the beat was clean."""
    beat = Liveness(tmp_path, "1/4")
    beat.beat(1000.0)
    last = beat.last_run()
    assert last == LastRun(1000.0, False, "1/4")
    gap = gap_since(last, 1090.0)
    assert gap is not None
    assert (gap.started, gap.ended, gap.shard) == (1000.0, 1090.0, "1/4")
    assert "crash" in gap.reason
    beat.beat(2000.0, clean=True)
    gap = gap_since(beat.last_run(), 2005.0)
    assert gap is not None and gap.reason == "daemon stopped"


def test_a_restart_within_a_second_is_no_gap(tmp_path: Path) -> None:
    """A start half a second after the last heartbeat records no monitoring gap."""
    assert gap_since(LastRun(1000.0, True, ""), 1000.5) is None


def test_unreadable_heartbeat_is_treated_as_a_first_run(tmp_path: Path) -> None:
    """A heartbeat.json that is not valid JSON reads as no last run rather than raising."""
    (tmp_path / "heartbeat.json").write_text("{not json")
    assert Liveness(tmp_path, "0/1").last_run() is None


def test_a_second_process_cannot_take_the_spool_directory(tmp_path: Path) -> None:
    """While one process holds the spool lock another gets SpoolDirectoryBusy; after unlock it is free again."""
    first = Liveness(tmp_path / "spool", "0/1")
    first.lock()
    try:
        # flock is per open file: another process (not just another fd) must be refused.
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from telemetryd.history.liveness import *\n"
                "try:\n    Liveness(Path(sys.argv[1]), '0/1').lock()\nexcept SpoolDirectoryBusy as e:\n"
                "    print(e); sys.exit(3)",
                str(tmp_path / "spool"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert child.returncode == 3, child.stderr
        assert "another telemetryd" in child.stdout
    finally:
        first.unlock()
    second = Liveness(tmp_path / "spool", "0/1")
    second.lock()  # released: free again
    second.unlock()


def test_lock_in_same_process_is_refused_too(tmp_path: Path) -> None:
    """A second Liveness locking the same directory in the same process raises SpoolDirectoryBusy."""
    first = Liveness(tmp_path, "0/1")
    first.lock()
    with pytest.raises(SpoolDirectoryBusy):
        Liveness(tmp_path, "0/1").lock()
    first.unlock()
