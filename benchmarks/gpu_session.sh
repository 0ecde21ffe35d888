#!/usr/bin/env bash
# One call on a lent GPU (the device tool's run, repo root, pyautoattack on PYTHONPATH): the robustness study's
# remaining phases (the evidence), then, if SUITE_SECONDS > 0, the GPU benchmark suite; each under its own time
# limit so the call ends inside the device's limit. The study folder is archived to OUT every 20 s (and at the
# end), so finished jobs come back even if the call is cut.
#   bash benchmarks/gpu_session.sh OUT STUDY_DIR STUDY_SECONDS SUITE_SECONDS WORKERS [STUDY FLAGS...]
# STUDY FLAGS go to robustness_study.py after --phase all, e.g. the long-tail rows of issue 32:
#   --settings digits-lt digits-lt-pgdat --configs ce_bs sp_margin_m1_la sp_margin_m2_la sp_margin_m4_la
#   --finalists ce_bs '*_la'
# Measured on an H200 (2026-11-30): 14 confirmation jobs side by side take 436-438 s each, so a call with
# STUDY_SECONDS 540-575 finishes one wave of 14; carry STUDY_DIR/runs so that the audits' CE surrogates are the
# committed rows' own models.
set -u
OUT=${1:-output/gpu}; STUDY=${2:-output/study}; STUDY_S=${3:-330}; SUITE_S=${4:-0}; WORKERS=${5:-14}
shift $(( $# < 5 ? $# : 5 ))
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc
  python3 -c "import torch, timm, accelerate; print('torch', torch.__version__, 'timm', timm.__version__, 'accelerate', accelerate.__version__)"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
archive() { tar czf "$OUT/study.tgz.part" -C "$STUDY" --exclude=runs --exclude=eval-work . 2>/dev/null && mv "$OUT/study.tgz.part" "$OUT/study.tgz"; }
( while sleep 20; do archive; done ) &
ARCHIVER=$!
# no new study job starts in the last 110 s: the jobs in flight finish before the limit
# torch.compile off for the study: each short job would pay the loss compilation in every worker
TORCHDYNAMO_DISABLE=1 timeout "$STUDY_S" python3 benchmarks/robustness_study.py --out "$STUDY" --phase all --workers "$WORKERS" \
  --time-budget $((STUDY_S - 110)) "$@" > "$OUT/study.log" 2>&1
echo "study exit $?"
kill $ARCHIVER; archive
grep -v '%|' "$OUT/study.log" | grep -E "screen |confirm |surrogates |chosen|jobs|budget|FAILED" | tail -n 60
if [ "$SUITE_S" -gt 0 ]; then
  timeout "$SUITE_S" python3 benchmarks/gpu_suite.py --out "$OUT/suite" --budget-s $((SUITE_S - 20)) > "$OUT/suite.log" 2>&1
  echo "suite exit $?"; tail -n 40 "$OUT/suite.log"
fi
