#!/usr/bin/env bash
# One-GPU check of llmatic's GPU paths (typically 2-4 minutes; every step is capped, 8 at
# most). Run from the repository root after `make install`:
#
#     bash benchmarks/gpu_check.sh
#
# Steps (each under its own time limit; a failing step does not stop the others):
#   1. nvidia-smi summary and torch's view of the GPU (fails at once without a GPU);
#   2. data path on CIFAR-10-shaped synthetic data (random uint8 50000x3x32x32, nothing is
#      downloaded): DataLoader (batch_loader) epoch vs llmatic.train.device_data.DeviceBatches
#      (when importable);
#   3. DDP one-GPU smoke: llmatic-evaluate with trainer=ddp when conf/trainer/ddp.yaml
#      exists, else a Lightning Trainer(devices=1, strategy="ddp") fit of NetModule;
#   4. a one-generation search: llm=rules trainer=gpu budget=smoke budget.generations=1.
# Ends with one table (name, result, seconds); the exit code is 1 if any step failed.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PY")
TMP=$(mktemp -d -t llmatic-gpu-check-XXXXXX)
trap 'rm -rf "$TMP"' EXIT

NAMES=()
RESULTS=()
SECONDS_TAKEN=()
FAILED=0

record() {  # name, result, seconds, ok(0/1)
    NAMES+=("$1")
    RESULTS+=("$2")
    SECONDS_TAKEN+=("$3")
    if [ "$4" != 0 ]; then FAILED=1; fi
}

elapsed() {  # seconds since a `date +%s.%N` stamp
    awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

die() {
    echo "gpu_check: $*" >&2
    exit 1
}

# -- 0. prerequisites: a GPU, the venv -------------------------------------------------------
[ -x "$PY" ] || die "no $PY: run \`make install\` first (or set PYTHON=...)"
command -v nvidia-smi >/dev/null 2>&1 || die "nvidia-smi not found: this check needs an NVIDIA GPU"
nvidia-smi -L >/dev/null 2>&1 || die "nvidia-smi cannot see a GPU (driver not loaded?)"
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || die "torch.cuda.is_available() is false: install a CUDA build of torch or check the driver"

# -- 1. summary -------------------------------------------------------------------------------
echo "== nvidia-smi"
nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version,utilization.gpu \
    --format=csv
"$PY" - <<'EOF'
import torch
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device 0: {p.name}, "
      f"{p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
EOF

# -- 2. data path -----------------------------------------------------------------------------
echo "== data path: DataLoader vs DeviceBatches (synthetic CIFAR-10 shape, 50000 images)"
start=$(date +%s.%N)
out=$(timeout 150 "$PY" - 2>"$TMP/data.err" <<'EOF'
import json, sys
sys.path.insert(0, "benchmarks")
from bench import gpu_data_benchmark
try:
    from llmatic.train.device_data import DeviceBatches
except ImportError as exc:
    DeviceBatches = None
    print(f"DeviceBatches not importable ({exc}): DataLoader path only", file=sys.stderr)
res = gpu_data_benchmark(DeviceBatches, n=50000, epochs=3)
print(json.dumps(res))
EOF
)
rc=$?
took=$(elapsed "$start")
if [ $rc = 0 ]; then
    echo "$out" | tail -n1 > "$TMP/data.json"
    summary=$("$PY" - "$TMP/data.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
loader = r["dataloader_epoch_s"]
if r["ratio"] is None:
    print(f"DataLoader {loader:.2f}s/epoch; DeviceBatches n/a")
else:
    device, ratio = r["device_epoch_s"], r["ratio"]
    print(f"DataLoader {loader:.2f}s/epoch, DeviceBatches {device:.2f}s/epoch, x{ratio:.2f}")
EOF
)
    echo "$out" | tail -n1
    record "data path (50000x3x32x32)" "$summary" "$took" 0
else
    tail -n 5 "$TMP/data.err" >&2
    record "data path (50000x3x32x32)" "FAILED (rc $rc, see above)" "$took" 1
fi

# -- 3. DDP one-GPU smoke ---------------------------------------------------------------------
echo "== DDP one-GPU smoke"
start=$(date +%s.%N)
if [ -f conf/trainer/ddp.yaml ]; then
    "$PY" -c 'from llmatic.plan.seed import seed_network; print(seed_network((1, 8, 8), 10))' \
        > "$TMP/seed_net.py"
    out=$(timeout 120 "$BIN/llmatic-evaluate" "$TMP/seed_net.py" trainer=ddp budget.epochs=1 \
          2>"$TMP/ddp.err")
    rc=$?
    echo "$out" | tail -n1 > "$TMP/ddp.json"
    status=$("$PY" - "$TMP/ddp.json" <<'EOF' 2>/dev/null
import json, sys
r = json.load(open(sys.argv[1]))
print(r["status"], r.get("error") or "")
EOF
)
    how="llmatic-evaluate trainer=ddp"
    if [ $rc = 0 ] && [ "${status%% *}" != ok ]; then rc=1; fi
else
    out=$(timeout 120 "$PY" - 2>"$TMP/ddp.err" <<'EOF'
import logging, tempfile
import lightning as L
import torch
from torch import nn
from llmatic.train.data import BatchArrayDataset, batch_loader
from llmatic.train.module import NetModule
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
g = torch.Generator().manual_seed(0)
x = torch.randint(0, 256, (4096, 3, 32, 32), dtype=torch.uint8, generator=g).numpy()
y = torch.randint(0, 10, (4096,), generator=g).numpy()
data = BatchArrayDataset(x, y, scale=1 / 255, mean=[0.5] * 3, std=[0.25] * 3)
net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                    nn.Flatten(), nn.Linear(256, 10))
module = NetModule(net=net, optimizer=lambda params: torch.optim.Adam(params, lr=1e-3))
with tempfile.TemporaryDirectory() as tmp:
    trainer = L.Trainer(accelerator="gpu", devices=1, strategy="ddp", max_epochs=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp)
    trainer.fit(module, train_dataloaders=batch_loader(data, 128, shuffle=True))
dev = next(module.parameters()).device
print(f"ok strategy={type(trainer.strategy).__name__} loss={module.last_loss:.3f} device={dev}")
EOF
)
    rc=$?
    status=$(echo "$out" | tail -n1)
    how="Lightning devices=1 strategy=ddp (no conf/trainer/ddp.yaml)"
fi
took=$(elapsed "$start")
if [ $rc = 0 ]; then
    echo "$status"
    record "DDP 1-GPU smoke" "ok: $how" "$took" 0
else
    tail -n 5 "$TMP/ddp.err" >&2
    record "DDP 1-GPU smoke" "FAILED ($how; rc $rc): ${status:-no result}" "$took" 1
fi

# -- 4. one-generation search on the GPU ------------------------------------------------------
echo "== search: llm=rules trainer=gpu budget=smoke budget.generations=1"
start=$(date +%s.%N)
timeout 210 "$BIN/llmatic" llm=rules trainer=gpu budget=smoke budget.generations=1 \
    "hydra.run.dir=$TMP/search" > "$TMP/search.out" 2> "$TMP/search.err"
rc=$?
took=$(elapsed "$start")
if [ $rc = 0 ] && [ -f "$TMP/search/summary.json" ]; then
    summary=$("$PY" - "$TMP/search/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
counts, best = s["status_counts"], s["network_archive"]["best_fitness"]
print(f"{s['candidates']} candidates, status {counts}, best fitness {best}")
sys.exit(0 if counts.get("ok", 0) > 0 else 1)
EOF
)
    ok=$?
    if [ $ok != 0 ]; then
        # Show why candidates failed (CUDA under the sandbox memory limit is the usual one).
        "$PY" - "$TMP/search/history.jsonl" <<'EOF' | head -n 5 >&2
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["status"] != "ok":
        print(r["candidate_id"], r["status"], (r.get("error") or "")[:300])
EOF
        summary="$summary (no candidate trained; try sandbox.memory_mb=null)"
    fi
    record "search 1 gen (trainer=gpu)" "$summary" "$took" $ok
else
    tail -n 10 "$TMP/search.err" >&2
    record "search 1 gen (trainer=gpu)" "FAILED (rc $rc, see above)" "$took" 1
fi

# -- summary ----------------------------------------------------------------------------------
echo
echo "== summary ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1))"
printf '%-28s  %-8s  %s\n' "name" "seconds" "result"
printf '%-28s  %-8s  %s\n' "----------------------------" "--------" "------"
for i in "${!NAMES[@]}"; do
    printf '%-28s  %-8.1f  %s\n' "${NAMES[$i]}" "${SECONDS_TAKEN[$i]}" "${RESULTS[$i]}"
done
if [ $FAILED != 0 ]; then
    echo "gpu_check: at least one step FAILED" >&2
    exit 1
fi
echo "gpu_check: all steps passed"
