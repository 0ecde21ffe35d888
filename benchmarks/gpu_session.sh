#!/usr/bin/env bash
# One call on a lent GPU (the device tool's run, repo root, pyautoattack on PYTHONPATH): the robustness study's
# remaining phases first (the evidence), then the GPU benchmark suite; each under its own time limit, so the call
# ends inside the device's 10-minute limit. Everything it writes goes to OUT (the study as one archive).
#   bash benchmarks/gpu_session.sh OUT STUDY_DIR STUDY_SECONDS SUITE_SECONDS
set -u
OUT=${1:-output/gpu}; STUDY=${2:-output/study}; STUDY_S=${3:-330}; SUITE_S=${4:-200}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc
  python3 -c "import torch, timm, accelerate; print('torch', torch.__version__, 'timm', timm.__version__, 'accelerate', accelerate.__version__)"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
# no new study job starts in the last 150 s: the jobs in flight finish before the limit
timeout "$STUDY_S" python3 benchmarks/robustness_study.py --out "$STUDY" --phase all --workers 12 \
  --time-budget $((STUDY_S - 150)) > "$OUT/study.log" 2>&1
echo "study exit $?"; grep -v '%|' "$OUT/study.log" | tail -n 25
tar czf "$OUT/study.tgz" -C "$STUDY" --exclude=runs --exclude=eval-work .
timeout "$SUITE_S" python3 benchmarks/gpu_suite.py --out "$OUT/suite" --budget-s $((SUITE_S - 20)) > "$OUT/suite.log" 2>&1
echo "suite exit $?"; tail -n 40 "$OUT/suite.log"
