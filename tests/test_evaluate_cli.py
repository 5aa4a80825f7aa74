"""``llmatic-evaluate``: one file, evaluated exactly as the search evaluates a candidate."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # trains in the sandbox; one test starts `llmatic-evaluate`

SMALL_CNN = '''Here is a small CNN for 8x8 digits:

```python
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(x.flatten(1))
```
'''


def _evaluate(path, *overrides):
    """The command as a process: its exit code and the JSON object on its last line."""
    proc = subprocess.run(
        [sys.executable, "-m", "llmatic.cli.evaluate", str(path), *overrides],
        capture_output=True, text=True, timeout=300,
    )
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}"
    return proc, json.loads(last)


def _evaluate_here(capsys, path, *overrides):
    """The command's ``main`` in this process (no second start of torch and a server)."""
    from llmatic.cli.evaluate import main

    code = main([str(path), *overrides])
    printed = capsys.readouterr()
    last = printed.out.strip().splitlines()[-1] if printed.out.strip() else "{}"
    return code, printed.err, json.loads(last)


def test_small_cnn_is_ok_and_well_above_chance(tmp_path):
    path = tmp_path / "net.md"
    path.write_text(SMALL_CNN)
    proc, out = _evaluate(path, "dataset=digits", "budget.epochs=3")
    assert proc.returncode == 0, proc.stderr
    assert out["status"] == "ok"
    assert out["val_accuracy"] > 0.7  # 10 classes: chance is 0.1
    assert out["params"] == 32 * 9 + 32 + 512 * 10 + 10
    for key in ("fitness", "flops", "width_to_depth", "error"):
        assert key in out


def test_network_above_the_compute_cap_is_measured_not_trained(tmp_path, capsys):
    path = tmp_path / "net.md"
    path.write_text(SMALL_CNN)  # 46k FLOPs per image: above a cap of 10k
    code, err, out = _evaluate_here(capsys, path, "dataset=digits", "dataset.max_flops=10000")
    assert code == 0, err
    assert out["status"] == "too_large"
    assert out["fitness"] is None and out["flops"] > 10_000
    assert "dataset.max_flops" in out["error"]
    assert "train" not in out["timings"]  # stopped after the measurement: no training


def test_syntax_error_is_reported_cleanly(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text("import torch.nn as nn\nclass Net(nn.Module:\n    pass\n")
    code, _, out = _evaluate_here(capsys, path)
    assert code == 0
    assert out["status"] == "syntax_error"
    assert "line 2" in out["error"]


def test_missing_file_and_bad_override_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llmatic.cli.evaluate", str(tmp_path / "x.py")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no such file" in proc.stderr
    path = tmp_path / "n.py"
    path.write_text("x = 1\n")
    proc = subprocess.run([sys.executable, "-m", "llmatic.cli.evaluate", str(path),
                           "operators.p_mutation=7"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "operators.p_mutation" in proc.stderr


def test_forbidden_code_is_rejected_before_anything_runs(tmp_path, capsys):
    target = tmp_path / "precious.txt"
    target.write_text("intact")
    path = tmp_path / "hostile.py"
    path.write_text(f"import os\nimport torch.nn as nn\nos.remove({str(target)!r})\n"
                    "class Net(nn.Module):\n    def forward(self, x):\n        return x\n")
    code, _, out = _evaluate_here(capsys, path)
    assert code == 0
    assert out["status"] == "forbidden" and "line 1" in out["error"]
    assert out["timings"] == {}  # rejected before any stage ran: no sandbox, no child
    assert target.read_text() == "intact"


def test_a_constant_network_on_cifar10_files_scores_at_chance(tmp_path, capsys):
    """CIFAR-10 in the real file format (few images), and a network that cannot learn: its
    accuracy is exactly the share of the one class it predicts, its loss log(10)."""
    import math

    from conftest import val_label_shares
    from test_data import write_fake_cifar
    from test_plausibility import CONSTANT

    write_fake_cifar(tmp_path / "data", n_train=300, n_test=20)
    data = ("dataset=cifar10", f"dataset.data_dir={tmp_path / 'data'}",
            "dataset.download=false", "dataset.verify_checksums=false")
    path = tmp_path / "constant.py"
    path.write_text(CONSTANT.replace("nn.Linear(64, 10)", "nn.Linear(3 * 32 * 32, 10)"))
    code, err, out = _evaluate_here(capsys, path, *data, "budget.epochs=1")
    assert code == 0, err[-3000:]
    assert out["status"] == "ok", out
    assert out["val_accuracy"] == pytest.approx(val_label_shares(*data)[0], abs=1e-12)
    assert out["val_loss"] == pytest.approx(math.log(10), abs=1e-6)
    assert out["params"] == 3 * 32 * 32 * 10 + 10
