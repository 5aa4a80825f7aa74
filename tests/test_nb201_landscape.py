"""`llmatic-nb201 synthetic --landscape random`: an optimum that no mutation prior guesses."""

from __future__ import annotations

import subprocess
import sys

from llmatic.nb201.synthetic import write_synthetic_table
from llmatic.nb201.table import load_table


def test_random_landscape_is_keyed_and_its_optimum_is_not_the_priors(tmp_path):
    paths = {}
    for name, kwargs in {"prior": {}, "a": {"landscape": "random", "key": 1},
                         "a2": {"landscape": "random", "key": 1},
                         "b": {"landscape": "random", "key": 2}}.items():
        paths[name] = tmp_path / f"{name}.csv"
        write_synthetic_table(paths[name], **kwargs)
    assert paths["a"].read_bytes() == paths["a2"].read_bytes()  # deterministic in the key
    best = {n: load_table(paths[n], "cifar10").best_by_valid()[0] for n in ("prior", "a", "b")}
    assert best["a"] != best["b"]
    assert best["prior"].count("nor_conv_3x3") >= 4  # the prior landscape: many 3x3 convs win
    assert best["prior"] not in (best["a"], best["b"])
    dead = load_table(paths["a"], "cifar10").lookup(("none",) * 6)
    assert dead.valid_accuracy == 10.0  # a cell cut off from its input stays at chance


def test_cli_writes_a_random_landscape(tmp_path):
    out = tmp_path / "t.csv"
    done = subprocess.run([sys.executable, "-m", "llmatic.cli.nb201", "synthetic", "--out",
                           str(out), "--landscape", "random", "--key", "3"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--landscape random --key 3" in out.read_text().splitlines()[0]
