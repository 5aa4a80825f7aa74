"""The sandbox: one fresh child per candidate, limits, statuses, scoring in the parent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmatic.plan import seed_network
from llmatic.sandbox import Sandbox, outcome_to_result, score_logits
from llmatic.train import DigitsDataModule
from llmatic.types import Status

pytestmark = pytest.mark.slow  # real candidates trained in the sandbox, timeouts waited for

CNN = """
import torch.nn as nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(16 * 4 * 4, 10)
    def forward(self, x):
        return self.head(self.features(x).flatten(1))
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory, unit_sandbox):
    root = tmp_path_factory.mktemp("sandbox")
    dm = DigitsDataModule(input_shape=(1, 8, 8), num_classes=10)
    data_dir = dm.write_child_arrays(root / "data")
    return unit_sandbox, dm, data_dir, root  # its jobs: 20 s unless they say otherwise


def run(env, code, *, epochs=2, name="job", class_name="Net"):
    box, dm, data_dir, root = env
    job = {
        "code": code, "class_name": class_name, "input_shape": [1, 8, 8], "num_classes": 10,
        "data_dir": str(data_dir), "epochs": epochs, "batch_size": 64, "seed": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_checkpointing": False,
                    "enable_progress_bar": False, "enable_model_summary": False,
                    "logger": False, "num_sanity_val_steps": 0, "limit_val_batches": 0},
        "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.003},
    }
    job_dir = root / name
    outcome = box.run(job, job_dir)
    return outcome_to_result(outcome, job_dir=job_dir, val_labels=dm.splits["y_val"],
                             num_classes=10), job_dir


def test_valid_cnn_trains_well_above_chance(env):
    result, _ = run(env, CNN, epochs=3)
    assert result.status is Status.OK, result.error
    assert result.val_accuracy > 0.6  # chance is 0.1
    assert result.fitness == result.val_accuracy
    assert result.params == 16 * 9 + 16 + 256 * 10 + 10
    assert result.flops > 0 and result.width == 16 and result.depth == 4


def test_a_declared_but_unused_lazy_layer_is_not_an_error(env):
    """LLMs often declare a layer and never call it; a lazy one then has no weights yet.
    It counts as no parameters and is left out of the optimizer (it was a runtime error)."""
    code = CNN.replace("        self.head = nn.Linear(16 * 4 * 4, 10)\n",
                       "        self.head = nn.Linear(16 * 4 * 4, 10)\n"
                       "        self.spare = nn.LazyLinear(32)\n")
    result, _ = run(env, code, epochs=1, name="unused_lazy")
    assert result.status is Status.OK, result.error
    assert result.params == 16 * 9 + 16 + 256 * 10 + 10


def test_same_seed_gives_identical_fitness(env):
    a, _ = run(env, CNN, name="a")
    b, _ = run(env, CNN, name="b")
    assert a.val_loss == b.val_loss


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("class Net(nn.Module:\n    pass\n", Status.SYNTAX_ERROR),
        ("import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self, width):\n"
         "        super().__init__()\n", Status.INSTANTIATION_ERROR),
        ("import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self):\n"
         "        super().__init__()\n        self.fc = nn.Linear(7, 10)\n"
         "    def forward(self, x):\n        return self.fc(x)\n", Status.RUNTIME_ERROR),
        ("import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self):\n"
         "        super().__init__()\n        self.fc = nn.Linear(64, 3)\n"
         "    def forward(self, x):\n        return self.fc(x.flatten(1))\n",
         Status.BAD_OUTPUT_SHAPE),
        ("import torch, torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self):\n"
         "        super().__init__()\n        self.fc = nn.Linear(64, 10)\n"
         "    def forward(self, x):\n        return self.fc(x.flatten(1)) * float('nan')\n",
         Status.NON_FINITE),
        ("import torch.nn as nn\nbig = [0] * (10 ** 10)\nclass Net(nn.Module):\n    pass\n",
         Status.MEMORY_LIMIT),
        ("import os\nos._exit(3)\n", Status.CRASHED),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", Status.INSTANTIATION_ERROR),
    ],
    ids=["syntax", "init-args", "forward-shape-error", "wrong-classes", "nan", "memory",
         "os-exit", "kill-blocked"],
)
def test_failures_get_their_status(env, code, status):
    result, _ = run(env, code, epochs=1)
    assert result.status is status, result.error
    assert result.fitness is None


def test_infinite_loop_is_killed_at_the_timeout(env, tmp_path):
    """The timeout travels with each job: the shared server (20 s) kills this one at 2 s and
    stays up for the next job."""
    box = env[0]
    code = "import time\nwhile True:\n    pass\n"
    outcome = box.run({"code": code, "class_name": "Net", "input_shape": [1, 8, 8],
                       "num_classes": 10}, tmp_path / "loop", timeout_s=2)
    assert outcome.timed_out
    assert outcome.seconds < 10
    result, _ = run(env, seed_network((1, 8, 8), 10), epochs=1, name="after_loop")
    assert result.status is Status.OK, result.error


def test_a_pool_on_a_lent_server_kills_at_its_own_timeout(env, tmp_path):
    """An evaluator sends its run's timeout with each job, not the lent server's (20 s)."""
    from llmatic.sandbox import PoolEvaluator

    pool = PoolEvaluator(workers=1, gpus="none", sandbox=env[0])
    pool.start(timeout_s=2, memory_mb=1024, torch_threads=1)
    try:
        outcome = pool.submit({"code": "while True:\n    pass\n", "class_name": "Net",
                               "input_shape": [1, 8, 8], "num_classes": 10},
                              tmp_path / "pool_loop").result()
    finally:
        pool.close()
    assert outcome.timed_out
    assert outcome.seconds < 10


def test_hostile_code_cannot_write_outside_or_spawn(env, tmp_path):
    target = tmp_path / "pwned.txt"
    for code in (
        f"open({str(target)!r}, 'w').write('x')\n",
        "import subprocess\nsubprocess.run(['true'])\n",
        "import socket\nsocket.create_connection(('127.0.0.1', 9))\n",
        "import os\nos.system('touch /tmp/llmatic-pwned')\n",
    ):
        result, _ = run(env, code, epochs=0, name=f"h{abs(hash(code))}")
        assert result.status is Status.INSTANTIATION_ERROR
        assert "not allowed" in result.error
    assert not target.exists()
    assert not Path("/tmp/llmatic-pwned").exists()


def test_child_sees_no_secrets_and_no_val_labels(env, tmp_path, monkeypatch):
    code = (
        "import os, pathlib\n"
        "leak = [k for k in os.environ if 'KEY' in k]\n"
        "files = sorted(p.name for p in pathlib.Path(os.environ['LLMATIC_DATA']).iterdir())"
        " if 'LLMATIC_DATA' in os.environ else []\n"
        "assert not leak, leak\n"
    )
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    box = Sandbox(timeout_s=20, memory_mb=512)  # a server started with the secret set
    try:
        outcome = box.run({"code": code, "class_name": "Missing", "input_shape": [1, 8, 8],
                           "num_classes": 10}, tmp_path / "env")
    finally:
        box.close()
    assert outcome.result["status"] == Status.NO_NETWORK.value  # the assert passed
    _, _, data_dir, _ = env
    assert sorted(p.name for p in Path(data_dir).iterdir()) == [
        "normalization.json", "x_train.npy", "x_val.npy", "y_train.npy"]


def test_seed_network_is_valid(env):
    result, _ = run(env, seed_network((1, 8, 8), 10), epochs=1)
    assert result.status is Status.OK
    assert result.params == (1 * 1 + 1) + (64 * 10 + 10)


def test_score_logits_matches_definition():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    labels = np.array([0, 1, 1])
    acc, loss = score_logits(logits, labels)
    assert acc == pytest.approx(2 / 3)
    expected = -np.mean([np.log(np.exp(2) / (np.exp(2) + 1)), np.log(np.e / (1 + np.e)),
                         np.log(1 / (np.exp(3) + 1))])
    assert loss == pytest.approx(expected)
