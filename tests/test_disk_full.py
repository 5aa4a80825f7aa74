"""A full disk loses nothing: the search stops with a named error and resumes to the same result.

The run directory lives on a real, small filesystem: a size-limited tmpfs mounted in a user +
mount namespace of the test (``unshare -Urm``), so filling it touches nothing on the host.
Once generation 1 is checkpointed, the test fills the tmpfs; the search must stop with exit
code 3 and a message naming the file and saying how to continue; the checkpoint must be
intact; after space is freed, ``llmatic resume=`` must finish the run with the same history
as an uninterrupted one (the shared smoke search, same config). The failing run is a real
``llmatic`` process on the full filesystem; the resume runs the same command in this process
(``conftest.run_app``, on the session's sandbox server) on a copy of the run directory taken
once the space was freed (the tmpfs is visible only inside the namespace).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMOKE

pytestmark = pytest.mark.slow

LLMATIC = str(Path(sys.executable).with_name("llmatic"))

SCRIPT = r"""
set -u
mount -t tmpfs -o size=96m tmpfs "$MNT" || exit 90
"$LLMATIC" "$@" hydra.run.dir="$MNT/run" > "$OUT/first.out" 2> "$OUT/first.err" &
pid=$!
while [ ! -f "$MNT/run/checkpoints/gen_0001.pkl" ] && kill -0 $pid 2>/dev/null; do
  sleep 0.1
done
dd if=/dev/zero of="$MNT/filler" bs=64k 2> /dev/null
df -k "$MNT" | tail -1 > "$OUT/df.txt"
wait $pid
echo $? > "$OUT/first.rc"
cp "$MNT/run/checkpoints/latest.pkl" "$OUT/latest-after-failure.pkl"
rm "$MNT/filler"
cp -a "$MNT/run" "$OUT/run"
"""


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", "mount -t tmpfs none /mnt"],
                           capture_output=True)
    return probe.returncode == 0


def _strip(obj):
    """A record without what depends on the clock."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items()
                if k != "timings" and not k.endswith(("_s", "seconds"))}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _history(path: Path) -> list:
    return [_strip(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="no user+mount namespace with tmpfs here "
                                                   "(unshare -Urm)")
def test_a_full_disk_stops_the_search_by_name_and_resume_gives_the_same_result(
        tmp_path, smoke_run, shared_sandbox, monkeypatch):
    from conftest import run_app

    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "MNT": str(mnt),
           "OUT": str(out), "LLMATIC": LLMATIC, "HOME": str(tmp_path)}
    if "PYTHONPATH" in os.environ:  # the llmatic under test, wherever it is imported from
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    args = [*SMOKE, "budget.generations=3"]
    done = subprocess.run(["unshare", "-Urm", "bash", "-c", SCRIPT, "bash", *args], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    first_err = (out / "first.err").read_text() if (out / "first.err").exists() else ""
    assert done.returncode == 0, (done.stderr, first_err[-3000:])
    assert (out / "first.rc").read_text().strip() == "3", first_err[-3000:]
    assert "No space left on device" in first_err, first_err[-3000:]
    assert f"free space, then resume with `llmatic resume={mnt / 'run'}`" in first_err
    assert "Traceback" not in first_err
    assert (out / "latest-after-failure.pkl").stat().st_size > 0  # the checkpoint is intact
    assert run_app(f"resume={out / 'run'}", cwd=tmp_path, monkeypatch=monkeypatch) == 0
    reference_dir, reference_summary, _ = smoke_run
    resumed = _history(out / "run" / "history.jsonl")
    assert resumed == _history(reference_dir / "history.jsonl")
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert _strip(summary["network_archive"]) == _strip(reference_summary["network_archive"])
