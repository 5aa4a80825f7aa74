"""Hostile and broken generated programs: one property per test.

Two layers are tested separately: the static policy (nothing runs) and the sandbox (with
the policy switched off, so the runtime defences must hold on their own). Every hostile
program must end with a non-``ok`` status within the timeout plus a few seconds, leave no
process behind, and change nothing outside its temporary directory. Benign programs that
look like real network code must pass.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import SMOKE, compose_config

from llmatic.extract import check_source
from llmatic.plan import seed_network
from llmatic.types import Status

pytestmark = pytest.mark.slow  # hostile code waits for the sandbox timeout, many times

TIMEOUT = 4.0
NET = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).flatten(1))
"""


@pytest.fixture(scope="module")
def search(tmp_path_factory, unit_sandbox):
    """The search's own evaluation path (policy off: the sandbox alone), short timeout (it
    travels with each job to the shared server)."""
    from llmatic.config import build_search

    cfg = compose_config(*SMOKE, "sandbox.static_policy=false", f"sandbox.timeout_s={TIMEOUT}",
                         "sandbox.memory_mb=1024", "budget.epochs=1")
    return build_search(cfg, tmp_path_factory.mktemp("adversarial"), sandbox=unit_sandbox)


@pytest.fixture(scope="module")
def free_search(search, tmp_path_factory):
    """As ``search`` (same server), with no import allow-list either: ``import os``,
    ``signal``, ``socket`` run, so only the audit hook and the kernel layers stand."""
    from llmatic.config import build_search

    cfg = compose_config(*SMOKE, "sandbox.static_policy=false", f"sandbox.timeout_s={TIMEOUT}",
                         "sandbox.memory_mb=1024", "budget.epochs=1",
                         "sandbox.allowed_imports=null")
    return build_search(cfg, tmp_path_factory.mktemp("adversarial-free"),
                        sandbox=search.space.evaluator.sandbox)


@pytest.fixture()
def outside(tmp_path):
    """A file outside the sandbox that hostile code will try to change."""
    target = tmp_path / "precious.txt"
    target.write_text("intact")
    return target


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


CID = [0]  # candidate ids across calls (each its own job directory)


def evaluate(search, code):
    CID[0] += 1
    started = time.perf_counter()
    result = search.evaluate(code, "Net", CID[0])
    seconds = time.perf_counter() - started
    server = search.space.evaluator.sandbox._proc.pid
    deadline = time.time() + 3
    while children_of(server) and time.time() < deadline:  # the server reaps within ms
        time.sleep(0.05)
    assert not children_of(server), "a candidate process outlived its evaluation"
    assert seconds < TIMEOUT + 6, f"took {seconds:.1f}s"
    return result


def hostile(search, code, outside=None, expect=None):
    result = evaluate(search, code)
    assert result.status is not Status.OK, result
    assert result.fitness is None
    if expect is not None:
        assert result.status in expect, (result.status, result.error)
    if outside is not None:
        assert outside.read_text() == "intact"
    return result


# -- runtime layer: timeouts and resource limits --------------------------------------------
def test_infinite_loop_at_import(search):
    hostile(search, "while True:\n    pass\n" + NET, expect={Status.TIMEOUT})


def test_infinite_loop_in_forward(search):
    code = NET.replace("        return self.fc(", "        while True:\n            pass\n"
                       "        return self.fc(")
    hostile(search, code, expect={Status.TIMEOUT})


def test_sigterm_ignoring_loop_is_still_killed(free_search):
    code = ("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "while True:\n    pass\n")
    hostile(free_search, code, expect={Status.TIMEOUT})  # the loop ran: SIGKILL ended it


def test_memory_bomb_list(search):
    hostile(search, "x = [0] * (10 ** 10)\n" + NET, expect={Status.MEMORY_LIMIT})


def test_memory_bomb_tensor_in_init(search):
    code = NET.replace("super().__init__()", "super().__init__()\n"
                       "        self.big = torch.empty(10 ** 11)")
    hostile(search, code, expect={Status.MEMORY_LIMIT})


def test_huge_output_is_capped(free_search, tmp_path):
    from llmatic.sandbox import outcome_to_result
    from llmatic.sandbox.child import MAX_FILE_BYTES

    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 10 ** 6)\n"
    hostile(free_search, code, expect={Status.INSTANTIATION_ERROR})
    # Again through the sandbox alone, which keeps the job directory: the file's real size.
    box = free_search.space.evaluator.sandbox
    outcome = box.run(free_search.space.job(code, "Net"), tmp_path / "job")
    result = outcome_to_result(outcome, job_dir=tmp_path / "job", val_labels=None,
                               num_classes=10)
    assert result.status is Status.INSTANTIATION_ERROR, result
    assert "File too large" in result.error  # RLIMIT_FSIZE (EFBIG), not a full disk
    size = (tmp_path / "job" / "stdout.txt").stat().st_size
    assert MAX_FILE_BYTES - 10 ** 6 <= size <= MAX_FILE_BYTES


def test_os_exit_is_crashed(free_search):
    result = hostile(free_search, "import os\nos._exit(0)\n", expect={Status.CRASHED})
    assert "exited with code 0 without a result" in result.error


def test_fifos_in_place_of_the_reports_do_not_hang_the_search(search):
    """os.mkfifo raises no audit event: a FIFO where the parent reads must not block it."""
    code = ("import torch\n"
            "for name in ('stderr.txt', 'result.json', 'val_logits.npy'):\n"
            "    try:\n"
            "        torch.os.remove(name)\n"
            "    except OSError:\n"
            "        pass\n"
            "    torch.os.mkfifo(name)\n") + NET
    hostile(search, code)  # evaluate() asserts it returns within the timeout + 6 s


# -- runtime layer: processes, files, network -------------------------------------------------
def test_fork_loop_is_refused(search):
    hostile(search, "import os\nwhile True:\n    os.fork()\n", expect={Status.INSTANTIATION_ERROR})


def test_subprocess_is_refused(search, outside):
    code = f"import subprocess\nsubprocess.run(['rm', {str(outside)!r}])\n"
    hostile(search, code, outside, expect={Status.INSTANTIATION_ERROR})


def test_os_system_is_refused(search, outside):
    hostile(search, f"import os\nos.system('rm {outside}')\n", outside,
            expect={Status.INSTANTIATION_ERROR})


def test_file_deletion_outside_is_refused(search, outside):
    hostile(search, f"import os\nos.remove({str(outside)!r})\n", outside)


def test_file_write_outside_is_refused(search, outside):
    hostile(search, f"open({str(outside)!r}, 'w').write('pwned')\n", outside)


def test_rmtree_outside_is_refused(search, outside):
    hostile(search, f"import shutil\nshutil.rmtree({str(outside.parent)!r})\n", outside)


def test_socket_connection_is_refused(free_search):
    import socket

    with socket.socket() as listener:  # a real listener: only the sandbox can stop it
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        result = hostile(free_search, code, expect={Status.INSTANTIATION_ERROR})
        assert "not allowed" in result.error or "Permission" in result.error, result.error
        with pytest.raises(socket.timeout):
            listener.accept()  # no connection ever arrived


def test_ctypes_segfault_is_refused(free_search):
    result = hostile(free_search, "import ctypes\nctypes.string_at(0)\n",
                     expect={Status.INSTANTIATION_ERROR})
    assert "ctypes" in result.error and "not allowed" in result.error, result.error


def test_self_kill_with_sigsegv_is_refused(free_search):
    result = hostile(free_search, "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n",
                     expect={Status.INSTANTIATION_ERROR})
    assert "os.kill is not allowed" in result.error, result.error


def test_obfuscated_import_via_builtins_is_refused(search, outside):
    code = (f"m = __builtins__['__imp' + 'ort__']('o' + 's')\n"
            f"m.remove({str(outside)!r})\n")
    hostile(search, code, outside, expect={Status.INSTANTIATION_ERROR})


def test_eval_import_is_refused(search, outside):
    code = f"eval(\"__import__('os').remove({str(outside)!r})\")\n"
    hostile(search, code, outside, expect={Status.INSTANTIATION_ERROR})


def test_importing_the_dataset_to_cheat_is_refused(search):
    code = NET.replace("import torch\n", "import torch\nfrom sklearn.datasets import load_digits\n")
    hostile(search, code, expect={Status.INSTANTIATION_ERROR})


# -- tampering with the number a candidate is judged by ------------------------------------
def test_patching_the_loss_is_tampering(search):
    code = NET + "\nF.cross_entropy = lambda *a, **k: torch.zeros((), requires_grad=True)\n"
    hostile(search, code, expect={Status.TAMPERING})


def test_patching_backward_is_tampering(search):
    code = NET + "\ntorch.Tensor.backward = lambda self, *a, **k: None\n"
    hostile(search, code, expect={Status.TAMPERING})


def test_patching_module_call_during_training_is_tampering(search):
    code = NET.replace(
        "        return self.fc(",
        "        if self.training:\n"
        "            nn.Module.__call__ = nn.Module.__call__.__wrapped__ if hasattr("
        "nn.Module.__call__, '__wrapped__') else (lambda m, *a, **k: m.forward(*a, **k))\n"
        "        return self.fc(")
    hostile(search, code, expect={Status.TAMPERING})


def test_scanning_memory_for_labels_is_refused(search):
    # The child never holds validation labels; the heap-walking module itself is refused.
    code = NET.replace("        return self.fc(", "        import gc\n        return self.fc(")
    result = hostile(search, code, expect={Status.RUNTIME_ERROR})
    assert "gc" in result.error


def test_honest_network_is_ok(search):
    result = evaluate(search, NET)
    assert result.status is Status.OK, result.error
    assert result.val_accuracy > 0.3


# -- static layer -------------------------------------------------------------------------
@pytest.mark.parametrize("code", [
    "import os\n", "import subprocess\n", "open('/etc/passwd').read()\n",
    "exec('print(1)')\n", "eval('1')\n", "__import__('os')\n", "compile('1', 'x', 'exec')\n",
    "globals()['x'] = 1\n", "import torch\ntorch.hub.load('a', 'b')\n",
    "import torch\ntorch.load('w.pt')\n", "import torch as t\nt._C._get_tracing_state()\n",
    "from torch.utils import cpp_extension\n", "import torch\ntorch.ops.aten.add\n",
    "import torch\ntorch.jit.load('m')\n", "x = ().__class__.__bases__[0].__subclasses__()\n",
    "f = lambda: 0\ng = f.__globals__\n", "import torch\ngetattr(torch, 'lo' + 'ad')('w')\n",
    "import torch.nn.functional as F\nF.cross_entropy = None\n",
    "import torch\ntorch.Tensor.backward = None\n", "import ctypes\n", "import gc\n",
    "from sklearn.datasets import load_digits\n", "b = __builtins__\n",
    # aliases and module attributes that reach outside (sockets and FIFOs in native code)
    "import torch\nt = torch\nt.distributed.TCPStore('8.8.8.8', 53, 1, False)\n",
    "import torch\ntorch.os.mkfifo('stderr.txt')\n", "import numpy as np\nnp.ctypes\n",
    # modules reached as attributes of allowed ones, aliases through containers and
    # defaults, special methods that run when the worker does not expect them
    "import random\nrandom._os.system('id')\n", "import collections\ncollections._sys\n",
    "import enum\nenum.bltns.open('x', 'w')\n", "import torch\ntorch.inspect.stack()\n",
    "import torch\ntorch.threading.Thread\n", "import torch\n[torch][0].relu = None\n",
    "import torch.nn.functional as F\nf = (F, 1)[0]\nf.cross_entropy = None\n",
    "import torch\nfor m in [torch]:\n    m.relu = None\n",
    "import torch\ndef patch(m=torch):\n    m.relu = None\n",
    "class A:\n    def __del__(self):\n        pass\n",
    "class A:\n    def __init_subclass__(cls):\n        pass\n",
    "class A:\n    def __torch_function__(self, *a, **k):\n        pass\n",
    "class A:\n    def __deepcopy__(self, memo):\n        return self\n",
])
def test_static_policy_rejects(code):
    violations = check_source(code)
    assert violations, code
    assert violations[0].line >= 1 and violations[0].source


@pytest.mark.parametrize("code", [
    seed_network((1, 8, 8), 10),
    NET,
    '''
import math
from typing import List, Optional
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super(Block, self).__init__()
        self.convs = nn.ModuleList([nn.Conv2d(c, c, 3, padding=1) for _ in range(2)])
        self.scale = 1.0 / math.sqrt(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x)) * self.scale + x
        return x


class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.block = Block(8)
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        for i in range(2):
            setattr(self, f"fc{i}", nn.Linear(16, 16))
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.stem(x))
        seq = x.view(x.size(0), 8, -1).transpose(1, 2)
        out, _ = self.lstm(seq)
        h = getattr(self, "fc0")(out[:, -1])
        return self.head(torch.cat([h, h], dim=1))
''',
    # subscript assignments whose index mentions a module (not monkeypatching)
    '''
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, act=F.relu):
        super().__init__()
        self.act = act
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        logits = self.act(self.fc(x.flatten(1)))
        mask = torch.zeros_like(logits)
        mask[torch.arange(logits.shape[0]), logits.argmax(1)] = 1.0
        scale = np.ones(10, dtype=np.float32)
        scale[int(np.uint8(3))] = 1.0
        m = torch.zeros(1)
        m = logits.clone()
        m[:, 0] = m[:, 0] * 1.0
        return m + mask * float(scale.mean())
''',
])
def test_benign_network_code_passes_both_layers(search, code):
    assert check_source(code) == []
    result = evaluate(search, code)
    assert result.status is Status.OK, result.error
