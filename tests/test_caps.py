"""How much of the machine one candidate may take: one adversarial property per test.

Each hostile candidate leaves Python for a fresh interpreter (``subprocess`` of
``sys.executable``) with the Python-level guards off (``audit_hook: false``: what an attacker
who escaped them has), so only the kernel caps of :mod:`llmatic.sandbox.caps` stand. The
candidate reports what it managed as ``GOT <n> <errno>`` in its error; the test checks the
number against the cap, the status, and that nothing of it is left on the host (no process
carrying the test's marker, no file in the job directory, no cgroup). Small caps keep it cheap.
Tests skip, naming the cap, only where this machine lacks it.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from pathlib import Path

import pytest

from llmatic.sandbox import Sandbox, outcome_to_result
from llmatic.sandbox.caps import Caps, own_cgroups
from llmatic.sandbox.isolation import probe
from llmatic.train import DigitsDataModule
from llmatic.types import Status

pytestmark = pytest.mark.slow

CAPS = {"max_processes": 48, "scratch_mb": 16, "scratch_inodes": 200, "cpus": 1}
MEMORY_MB = 256
REPORT = probe("auto", caps=Caps(**CAPS, memory_mb=MEMORY_MB)).report()
ACTIVE = set(REPORT["active"])
MARK = f"llmatic-caps-{uuid.uuid4().hex[:8]}"


def needs(cap: str):
    return pytest.mark.skipif(cap not in ACTIVE, reason=f"this machine lacks the {cap} cap: "
                                                        f"{REPORT['missing'].get(cap)}")


NET = """
import torch.nn as nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
    def forward(self, x):
        return self.fc(x.flatten(1))
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("caps")
    dm = DigitsDataModule(input_shape=(1, 8, 8), num_classes=10)
    data_dir = dm.write_child_arrays(root / "data")
    box = Sandbox(timeout_s=40, memory_mb=MEMORY_MB, isolation="auto", caps=CAPS)
    box._ensure_server()
    yield box, dm, data_dir, root
    box.close()


def job(payload: str, data_dir: Path | None) -> dict:
    return {"code": payload + NET, "class_name": "Net", "input_shape": [1, 8, 8],
            "num_classes": 10, "seed": 0, "audit_hook": False,
            "epochs": 1 if data_dir else 0, "batch_size": 64,
            "data_dir": str(data_dir) if data_dir else None,
            "trainer": {"accelerator": "cpu", "devices": 1, "enable_checkpointing": False,
                        "enable_progress_bar": False, "enable_model_summary": False,
                        "logger": False, "num_sanity_val_steps": 0, "limit_val_batches": 0},
            "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.003}}


def run(env, payload: str, name: str, *, train: bool = False):
    box, dm, data_dir, root = env
    job_dir = root / name
    outcome = box.run(job(payload, data_dir if train else None), job_dir)
    result = outcome_to_result(outcome, job_dir=job_dir,
                               val_labels=dm.splits["y_val"] if train else None,
                               num_classes=10)
    return result, job_dir


def fresh_python(script: str) -> str:
    """Top-level candidate code: run ``script`` in a new interpreter, raise with its output."""
    return (f"import subprocess, sys\n"
            f"p = subprocess.run([sys.executable, '-c', {script!r}, {MARK!r}],"
            f" capture_output=True, text=True)\n"
            f"raise RuntimeError('GOT ' + (p.stdout.strip() or 'nothing') + ' rc ' +"
            f" str(p.returncode) + ' ' + p.stderr[-300:])\n")


def got(result, status: Status = Status.INSTANTIATION_ERROR) -> list[int]:
    assert result.status is status, result  # (INSTANTIATION_ERROR: its own code raised)
    match = re.search(r"GOT ([-\d ]+) rc", result.error or "")
    assert match, result.error
    return [int(v) for v in match.group(1).split()]


def host_is_clean(job_dir: Path, env) -> None:
    """No process of the candidate survives; its scratch left nothing on the host disk."""
    survivors = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if MARK.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                survivors.append(pid)
        except OSError:
            pass
    assert survivors == []
    scratch = job_dir / "scratch"
    assert not scratch.exists() or list(scratch.iterdir()) == []
    assert leftover_cgroups(env) == []


def leftover_cgroups(env) -> list[Path]:
    """Candidate cgroups the server has not removed (it removes each once it is reaped)."""
    server = env[0]._proc.pid
    return [p for ctl, (_, base) in own_cgroups().items() if ctl in ("pids", "memory", "cpu")
            for p in Path(base, f"llmatic-{server}").glob("c*") if p.is_dir()]


# -- processes and threads --------------------------------------------------------------
FORK_BOMB = """
import os, time
n, err = 0, 0
for _ in range(400):
    try:
        pid = os.fork()
    except OSError as exc:
        err = exc.errno
        break
    if pid == 0:
        os.close(1)  # (the candidate reads the bomb's stdout to its end)
        os.close(2)
        time.sleep(60)
        os._exit(0)
    n += 1
print(n, err)
"""


@needs("processes")
def test_fork_bomb_stops_at_the_process_cap(env):
    result, job_dir = run(env, fresh_python(FORK_BOMB), "forkbomb")
    started, err = got(result)
    # The candidate, its shell-less subprocess and the bomb itself count too.
    assert 0 < started < CAPS["max_processes"], result.error
    assert err == 11  # EAGAIN: fork refused by the kernel
    host_is_clean(job_dir, env)


THREADS = """
import threading, time
n, err = 0, 0
ev = threading.Event()
for _ in range(400):
    try:
        threading.Thread(target=ev.wait, daemon=True).start()
    except RuntimeError:
        err = 11
        break
    n += 1
print(n, err)
ev.set()
"""


@needs("processes")
def test_many_threads_stop_at_the_process_cap(env):
    result, job_dir = run(env, fresh_python(THREADS), "threads")
    started, err = got(result)
    assert 0 < started < CAPS["max_processes"], result.error
    assert err == 11
    host_is_clean(job_dir, env)


# -- scratch space ----------------------------------------------------------------------
DISK = """
import os
n, err = 0, 0
try:
    with open("fill.bin", "wb") as fh:
        while n < 64 * 2**20:
            fh.write(b"x" * 2**20)
            fh.flush()
            n += 2**20
except OSError as exc:
    err = exc.errno
print(n // 2**20, err)
"""


@needs("scratch")
def test_filling_the_disk_stops_at_the_scratch_size(env):
    result, job_dir = run(env, fresh_python(DISK), "disk")
    written_mb, err = got(result)
    assert written_mb <= CAPS["scratch_mb"], result.error
    assert err == 28  # ENOSPC
    host_is_clean(job_dir, env)


INODES = """
import os
n, err = 0, 0
try:
    for i in range(5000):
        open(f"f{i}", "w").close()
        n += 1
except OSError as exc:
    err = exc.errno
print(n, err)
"""


@needs("scratch")
def test_filling_the_inodes_stops_at_the_scratch_inode_cap(env):
    result, job_dir = run(env, fresh_python(INODES), "inodes")
    files, err = got(result)
    assert files < CAPS["scratch_inodes"], result.error
    assert err == 28
    host_is_clean(job_dir, env)


# -- memory -----------------------------------------------------------------------------
SHARED = """
import mmap, os
errs = []
for make in (lambda: os.memfd_create("a"), lambda: mmap.mmap(-1, 2**20)):
    try:
        make()
        errs.append(0)
    except OSError as exc:
        errs.append(exc.errno)
print(*errs)
"""


@needs("seccomp")
def test_memfds_and_shared_anonymous_memory_are_refused(env):
    result, job_dir = run(env, fresh_python(SHARED), "memfd")
    memfd, shared_map = got(result)
    assert memfd == 1  # EPERM: memfd_create refused by seccomp (RLIMIT_DATA does not count it)
    assert shared_map == 12  # ENOMEM: MAP_SHARED | MAP_ANONYMOUS refused
    host_is_clean(job_dir, env)


HOGS = """
import subprocess, sys
hog = "b = []\\nwhile True: b.append(bytearray(32 * 2**20))"
procs = [subprocess.Popen([sys.executable, '-c', hog]) for _ in range(6)]
print(*sorted(p.wait() for p in procs))
"""


@needs("memory")
def test_processes_that_together_exceed_memory_are_killed_by_the_cgroup(env):
    # Each process stays under RLIMIT_DATA (per process); together they pass the cgroup.
    result, job_dir = run(env, fresh_python(HOGS), "memory")
    # The cgroup's OOM killer took the largest process (a hog or the candidate itself): the
    # server read the kill from the cgroup, so the status says memory, not a crash.
    assert result.status is Status.MEMORY_LIMIT, result
    assert "memory cgroup killed" in result.error
    host_is_clean(job_dir, env)


# -- CPU --------------------------------------------------------------------------------
CPU_HOG = """
import os, resource, subprocess, sys, time
def cpu_cgroup(pid):
    for line in open(f"/proc/{pid}/cgroup").read().splitlines():
        _, names, path = line.split(":", 2)
        if "cpu" in names.split(",") or not names:
            found = path
            if names:
                return "/sys/fs/cgroup/cpu" + path
    return "/sys/fs/cgroup" + found
def quota(group):
    if os.path.exists(group + "/cpu.cfs_quota_us"):
        return int(open(group + "/cpu.cfs_quota_us").read())
    return int(open(group + "/cpu.max").read().split()[0])
spin = "import time\\nt = time.time()\\nwhile time.time() - t < 3: pass"
t = time.time()
procs = [subprocess.Popen([sys.executable, '-c', spin]) for _ in range(6)]
mine = cpu_cgroup(os.getpid())
inside = sum(cpu_cgroup(p.pid) == mine for p in procs)
for p in procs:
    p.wait()
wall = time.time() - t
cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
print(int(1000 * (cpu.ru_utime + cpu.ru_stime)), int(1000 * wall), quota(mine), inside)
"""


@needs("cpu")
def test_cpu_hogs_get_their_share_and_the_other_worker_is_unchanged(env):
    honest_alone, _ = run(env, "", "honest-alone", train=True)
    assert honest_alone.status is Status.OK, honest_alone.error
    out: dict = {}
    hog = threading.Thread(target=lambda: out.update(hog=run(env, fresh_python(CPU_HOG),
                                                             "cpuhog")))
    hog.start()  # two candidates at once: the hog and an honest network
    honest, _ = run(env, "", "honest-beside", train=True)
    hog.join()
    cpu_ms, wall_ms, quota_us, inside = got(out["hog"][0])
    # Every spinning process is in the candidate's cpu cgroup, whose quota is one core per
    # 100 ms period: the kernel throttles them together (whatever the machine's load).
    assert inside == 6
    assert quota_us == int(CAPS["cpus"] * 100_000)
    # Six spinning processes, one core's quota: at most ~1 core-second per second (the
    # machine's load can only lower it), instead of six.
    assert cpu_ms <= 1.2 * wall_ms + 300, (cpu_ms, wall_ms)
    assert honest.status is Status.OK
    assert honest.val_accuracy == honest_alone.val_accuracy  # its result is unchanged
    host_is_clean(out["hog"][1], env)


def test_caps_are_reported_with_their_means():
    caps = REPORT["caps"]
    assert caps["max_processes"] == CAPS["max_processes"]
    assert set(REPORT["active"]) | set(REPORT["missing"]) >= {"processes", "scratch",
                                                              "memory", "cpu"}
    for cap in ("processes", "scratch", "memory", "cpu"):
        assert (cap in REPORT["active"]) == bool(caps["by"].get(cap)), cap


def test_strict_refuses_a_missing_cap_by_name():
    from llmatic.sandbox import IsolationError

    with pytest.raises(IsolationError, match="cpu: off"):
        probe("strict", caps=Caps(cpus=None))


def test_caps_out_of_range_are_named():
    with pytest.raises(ValueError, match="sandbox.max_processes"):
        Sandbox(timeout_s=5, memory_mb=None, caps={"max_processes": 2})
    with pytest.raises(ValueError, match="sandbox.cpus"):
        Sandbox(timeout_s=5, memory_mb=None, caps={"cpus": 0})


@pytest.mark.parametrize(("override", "key"), [
    ("sandbox.max_processes=2", "sandbox.max_processes"),
    ("sandbox.scratch_mb=0", "sandbox.scratch_mb"),
    ("sandbox.scratch_inodes=1.5", "sandbox.scratch_inodes"),
    ("sandbox.cpus=0", "sandbox.cpus"),
])
def test_a_bad_cap_in_the_config_is_named_before_any_work(override, key):
    from conftest import compose_config

    from llmatic.config import validate_config
    from llmatic.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        validate_config(compose_config("budget=smoke", override))
    validate_config(compose_config("budget=smoke", "sandbox.cpus=0.5",
                                   "sandbox.scratch_mb=null"))  # null: that cap is off


def test_the_server_removes_its_cgroups_when_it_stops(env):  # keep last: stops the server
    box = env[0]
    pid = box._proc.pid
    mine = [Path(base, f"llmatic-{pid}") for ctl, (_, base) in own_cgroups().items()
            if ctl in ("pids", "memory", "cpu")]
    if not any(p.is_dir() for p in mine):
        pytest.skip("no cgroup is writable here")
    box.close()
    assert [p for p in mine if p.exists()] == []
