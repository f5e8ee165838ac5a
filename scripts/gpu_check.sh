#!/usr/bin/env bash
# Everything that needs a GPU, in one call of under 8 minutes: the GPU test suite, the student
# tests on the GPU, and the labeling and training benchmarks at real students' shapes.
#
#   ../shared/tools/device-wheels        # once, here: fills .whl/ with what the GPU image lacks
#   bash scripts/gpu_check.sh [OUT]      # there: logs and JSON in OUT (default runs/gpu_check)
#
# With .whl/ present (WHEELS=DIR for another folder), its wheels are installed into /tmp/site
# first, with no network. ROWS, TRAIN_STEPS, LABEL_ARGS (more bench_label.py options) and the
# *_LIMIT variables shrink the run, e.g. for a dry run on a CPU machine.
# Each part has its own time limit (430 s in all), so one that hangs cannot take the others with
# it; the exit status is non-zero when any part failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=true
wheels=${WHEELS:-.whl}
if compgen -G "$wheels/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl \
    || { echo "gpu_check: installing $wheels failed"; exit 2; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
started=$SECONDS
failed=()

part() {  # part NAME LIMIT COMMAND...: run one part, its log in OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.log"
  echo "== $name: exit $rc after $((SECONDS - t0))s"
  [ "$rc" -eq 0 ] || failed+=("$name")
}

python3 - <<'EOF' | tee "$out/machine.txt"
import torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__,
      "device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
EOF
part pytest_gpu "${PYTEST_LIMIT:-80}" python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py
part bench_label "${LABEL_LIMIT:-170}" python3 scripts/bench_label.py --out "$out/bench_label.json" \
  --rows "${ROWS:-200000}" --run-dir /tmp/distill_bench_label ${LABEL_ARGS:-}
part bench_train "${TRAIN_LIMIT:-80}" python3 scripts/bench_train.py --out "$out/bench_train.json" --repeats 1 \
  ${TRAIN_STEPS:+--steps $TRAIN_STEPS} --models-dir /tmp/distill_bench_models
part demo "${DEMO_LIMIT:-40}" python3 -m distill.cli run recipe=demo run_dir=/tmp/distill_demo
part pytest_students "${STUDENTS_LIMIT:-60}" python3 -m pytest -q -p no:cacheprovider -x tests/test_students.py

echo "gpu_check: $((SECONDS - started))s; failed: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
