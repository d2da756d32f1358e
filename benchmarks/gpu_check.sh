#!/usr/bin/env bash
# The prepared GPU check: every benchmark that needs an accelerator, in one short run
# (< 10 minutes on one H200), each part under its own `timeout`, every table written under
# one output directory: $OUT if set (the device tool's folder that comes back), else
# benchmarks/out/gpu.
#
#   benchmarks/gpu_check.sh              # on the GPU machine (see benchmarks/README.md)
#   benchmarks/gpu_check.sh --cpu-smoke  # here, on the CPU: each part in its quickest mode
#
# Parts (a missing script is skipped and said so; a failing part does not stop the others,
# but makes the exit status 1):
#   env        python, jax and its devices, nvidia-smi; installs carried wheels if needed
#   quantize   benchmarks/bench_quantize.py   ($QUANTIZE_ARGS)
#   step       benchmarks/bench_step.py       ($STEP_ARGS)
#   parallel   benchmarks/bench_parallel.py   ($PARALLEL_ARGS), if present; on the CPU
#              (JAX_PLATFORMS=cpu): it fakes several devices on the host platform
#   resnet     benchmarks/gpu_resnet_step.py  ($RESNET_ARGS)
#   int8       benchmarks/bench_int8.py       ($INT8_ARGS): int8 vs bfloat16 vs float32
#              (forward, SGLD step, BMA from the packed bank), table in $OUTDIR/int8.md
# Wheels: if `import jax` (with a GPU backend) or `import blackjax` fails and a .whl/
# directory is there, its wheels are installed with pip --no-index --no-deps into
# /tmp/lps-site, which goes first on PYTHONPATH.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

SMOKE=0
for arg in "$@"; do
  case "$arg" in
    --cpu-smoke) SMOKE=1 ;;
    -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

OUTDIR="${OUT:-$ROOT/benchmarks/out/gpu}"
mkdir -p "$OUTDIR"
PY="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::DeprecationWarning}"

if [ "$SMOKE" = 1 ]; then
  export JAX_PLATFORMS=cpu
  QUANTIZE_ARGS="${QUANTIZE_ARGS:---quick}"
  STEP_ARGS="${STEP_ARGS:---quick}"
  PARALLEL_ARGS="${PARALLEL_ARGS:---devices 1 2 --chains 4 --steps 10 --dp-steps 5 --repeats 1 --out /tmp/lps-parallel-smoke.md}"
  RESNET_ARGS="${RESNET_ARGS:---quick --modes fp,vc}"
  INT8_ARGS="${INT8_ARGS:---quick --bf16}"
  T_ENV=120; T_QUANTIZE=300; T_STEP=300; T_PARALLEL=300; T_RESNET=600; T_INT8=300
  BUDGET="${BUDGET:-2100}"
else
  # Budget on one H200: the whole script stops within BUDGET; each part normally ends well
  # before its limit.
  QUANTIZE_ARGS="${QUANTIZE_ARGS:-}"
  STEP_ARGS="${STEP_ARGS:-}"
  # bench_parallel.py fakes devices on the host platform: run it on the 16 CPU cores.
  PARALLEL_ARGS="${PARALLEL_ARGS:---devices 1 2 4 8 --steps 100 --dp-steps 50 --repeats 2 --out /tmp/lps-parallel.md}"
  RESNET_ARGS="${RESNET_ARGS:---batch 128 --steps 50 --rounds 2 --modes fp,lpf,vc}"
  # int8: ResNet-18 and the CNN in BFP8 and fixed8 with bfloat16 rows; BMA on synthetic
  # Fashion-MNIST-shaped images when the dataset is not installed there
  INT8_ARGS="${INT8_ARGS:---bf16 --models cnn,resnet18 --formats bfp8,fixed8 --rounds 3 --inner 5 --bma-models cnn --bma-rounds 2}"
  T_ENV=30; T_QUANTIZE=70; T_STEP=70; T_PARALLEL=70; T_RESNET=210; T_INT8=150
  BUDGET="${BUDGET:-600}"  # whole script: 10 min; a part gets at most what is left
fi

SUMMARY="$OUTDIR/summary.md"
FAILED=0
START=$(date +%s)
{
  echo "# gpu_check.sh $([ "$SMOKE" = 1 ] && echo '--cpu-smoke')"
  echo
  echo "- date: $(date -Iseconds)"
  echo "- host: $(uname -nmr)"
  echo "- output: $OUTDIR"
  echo
  echo "| part | status | seconds | log |"
  echo "|---|---|---:|---|"
} >"$SUMMARY"

# run_part NAME LIMIT_S LOG_NAME COMMAND...: run under timeout, tee to the log, record.
run_part() {
  local name="$1" limit="$2" log="$OUTDIR/$3"
  shift 3
  local t0 rc status left
  t0=$(date +%s)
  left=$(( START + BUDGET - t0 ))
  if [ "$left" -lt 5 ]; then
    skip_part "$name" "no time left in the ${BUDGET}s budget"
    FAILED=1
    return 0
  fi
  [ "$left" -lt "$limit" ] && limit="$left"
  echo "=== $name (limit ${limit}s): $*"
  set +e
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  case "$rc" in
    0) status="ok" ;;
    124|137) status="TIMED OUT (${limit}s)"; FAILED=1 ;;
    *) status="FAILED (exit $rc)"; FAILED=1 ;;
  esac
  echo "| $name | $status | $(( $(date +%s) - t0 )) | $(basename "$log") |" >>"$SUMMARY"
  echo "=== $name: $status"
}

skip_part() {
  echo "| $1 | skipped: $2 | 0 | — |" >>"$SUMMARY"
  echo "=== $1: skipped: $2"
}

# Carried wheels, installed in this shell (PYTHONPATH must reach the parts after it).
need_wheels=0
if [ "$SMOKE" = 0 ]; then
  timeout "$T_ENV" "$PY" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' \
    >/dev/null 2>&1 || need_wheels=1
fi
timeout "$T_ENV" "$PY" -c 'import blackjax' >/dev/null 2>&1 || need_wheels=1
if [ "$need_wheels" = 1 ]; then
  if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
    echo "=== installing carried wheels from .whl/ into /tmp/lps-site"
    run_part wheels "$T_ENV" wheels.txt "$PY" -m pip install -q --no-index --no-deps \
      --no-compile --no-cache-dir --upgrade --target /tmp/lps-site "$ROOT"/.whl/*.whl
    export PYTHONPATH="/tmp/lps-site:$PYTHONPATH"
  else
    echo "=== jax with a GPU backend, or blackjax, is missing and no .whl/ was carried"
  fi
fi

ENV_PY='
import platform, shutil, subprocess, sys
if shutil.which("nvidia-smi"):
    subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.sm",
                    "--format=csv"], check=False)
import jax
print("python", platform.python_version(), sys.executable)
print("jax", jax.__version__, "backend", jax.default_backend(), "devices", jax.devices())
import blackjax, flax, optax
import lpsampling
print("lpsampling", lpsampling.__version__, "from", lpsampling.__file__)
print("flax", flax.__version__, "optax", optax.__version__, "blackjax", blackjax.__version__)
'
run_part env "$T_ENV" env.txt "$PY" -c "$ENV_PY"

# shellcheck disable=SC2086  # the *_ARGS are word lists on purpose
{
  if [ -f benchmarks/bench_quantize.py ]; then
    run_part quantize "$T_QUANTIZE" quantize.txt "$PY" benchmarks/bench_quantize.py $QUANTIZE_ARGS
  else
    skip_part quantize "benchmarks/bench_quantize.py not found"
  fi
  if [ -f benchmarks/bench_step.py ]; then
    run_part step "$T_STEP" step.txt "$PY" benchmarks/bench_step.py $STEP_ARGS
  else
    skip_part step "benchmarks/bench_step.py not found"
  fi
  if [ -f benchmarks/bench_parallel.py ]; then
    run_part parallel "$T_PARALLEL" parallel.txt env JAX_PLATFORMS=cpu \
      "$PY" benchmarks/bench_parallel.py $PARALLEL_ARGS
  else
    skip_part parallel "benchmarks/bench_parallel.py not found"
  fi
  run_part resnet "$T_RESNET" resnet.txt "$PY" benchmarks/gpu_resnet_step.py $RESNET_ARGS \
    --write "$OUTDIR/resnet.md"
  if [ -f benchmarks/bench_int8.py ]; then
    run_part int8 "$T_INT8" int8.txt "$PY" benchmarks/bench_int8.py $INT8_ARGS \
      --out "$OUTDIR/int8.md"
  else
    skip_part int8 "benchmarks/bench_int8.py not found"
  fi
}

{
  echo
  echo "total: $(( $(date +%s) - START )) s; $([ "$FAILED" = 0 ] && echo 'all parts ok' || echo 'SOME PARTS FAILED')"
} >>"$SUMMARY"
echo
cat "$SUMMARY"
exit "$FAILED"
