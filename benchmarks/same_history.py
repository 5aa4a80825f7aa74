"""Check that a change of layout keeps behaviour: same seeds, same ``history.jsonl``.

Runs four searches (a smoke and a default-budget run on digits, a default run on mnist5k and
a NAS-Bench-201 run on the synthetic table), strips what depends on the clock (timings, wall
seconds) and prints one digest per run. ``--save FILE`` keeps the digests and the stripped
histories; ``--against FILE`` compares with a saved file and names the first record that
differs.

    python benchmarks/same_history.py --save /tmp/before.json      # on the old commit
    python benchmarks/same_history.py --against /tmp/before.json   # on the new one
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

#: Keys whose values depend on the machine's speed, not on the search.
CLOCK_KEYS = ("timings", "wall_seconds", "seconds", "elapsed", "time_s", "gen_seconds")

RUNS = {
    # "smoke" and "default" are the runs of before mnist5k became the default task (6f3f5c3):
    # digits, so that histories saved before that commit still compare; "mnist5k" is today's
    # default run.
    "smoke": ["dataset=digits", "budget=smoke", "seed=3"],
    "default": ["dataset=digits", "seed=0"],
    "mnist5k": ["seed=0"],
    "nb201": ["experiment=paper_nb201", "llm=rules", "seed=1", "budget.generations=6",
              "budget.candidates_per_generation=20", "nb201.baselines=[]"],
}


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items()
                if not any(k == c or k.endswith("_s") or k.endswith("seconds") for c in CLOCK_KEYS)}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def run(name: str, overrides: list[str], workdir: Path) -> list[dict]:
    """One search in ``workdir/name``; its history without clock values."""
    run_dir = workdir / name
    extra = []
    if name == "nb201":
        table = workdir / "nb201_synthetic.csv"
        if not table.exists():
            subprocess.run(["llmatic-nb201", "synthetic", "--out", str(table)], check=True,
                           stdout=subprocess.DEVNULL)
        extra = [f"nb201.table={table}"]
    subprocess.run(["llmatic", *overrides, *extra, f"hydra.run.dir={run_dir}"], check=True,
                   stdout=subprocess.DEVNULL)
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    return [_strip(json.loads(line)) for line in lines if line.strip()]


def main() -> int:
    """Run, digest, save or compare."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save")
    parser.add_argument("--against")
    parser.add_argument("--only", nargs="*", default=list(RUNS))
    args = parser.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            history = run(name, RUNS[name], Path(tmp))
            text = json.dumps(history, sort_keys=False)
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            out[name] = {"records": len(history), "digest": digest, "history": history}
            print(f"{name:8s} {len(history):4d} records  sha256 {digest}", flush=True)
    if args.save:
        Path(args.save).write_text(json.dumps(out))
    if args.against:
        saved = json.loads(Path(args.against).read_text())
        same = True
        for name, now in out.items():
            if name not in saved:
                print(f"{name}: not in {args.against} (nothing to compare)")
                continue
            before = saved[name]["history"]
            for i, (a, b) in enumerate(zip(before, now["history"], strict=False)):
                if a != b:
                    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                    print(f"{name}: record {i} differs in {keys}")
                    same = False
                    break
            else:
                if len(before) != len(now["history"]):
                    print(f"{name}: {len(before)} records before, {len(now['history'])} now")
                    same = False
                else:
                    print(f"{name}: identical ({len(before)} records)")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
