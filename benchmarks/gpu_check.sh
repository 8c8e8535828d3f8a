#!/usr/bin/env bash
# benchmarks/gpu_check.sh: the study on a GPU kernel in one prepared command of <= 10 min (issue 18).
#
#   make gpu-wheels        here, once: the wheels the GPU machine lacks (cp312 manylinux) and the Fashion-MNIST
#                          files into .gpu-carry/ (git-ignored; carry it), with its size checked against 64 MiB
#   bash benchmarks/gpu_check.sh [--out DIR] [--pack DIR]        on the GPU machine (make gpu-check)
#   bash benchmarks/gpu_check.sh --dry-run [--out DIR]           on a CPU: the same steps at smoke sizes (CI)
#
# Steps: the device is checked; the wheels are installed into a temporary prefix (pip --no-index --no-deps
# --target); a Jupyter kernel named "aestudy" is registered in that prefix with PYTHONPATH = prefix + checkout;
# the IDX files are unpacked and decoded (aestudy data fetch); then the throughput rows (benchmarks/gpu_check.py
# rows: VAE epochs with fit in fp32/TF32/bf16/torch.compile, a CUDA-graph step, 5 seeds sequential vs batched,
# IS-NLL k = 5,000 on the 10k test images), the series on CUDA in the smoke profile (every notebook's CUDA path
# in ~1 min) and in the full profile notebook by notebook, each given what is left of the time budget. Prints a
# summary table; writes DIR/gpu_check.json, summary.txt, setup.tsv/.log, rows.json and series-*/ (executed
# notebooks, metrics.json, report.md per notebook in runs/NN and merged). Exit 0: nothing failed (a notebook or
# row left out or stopped for time is "skipped"/"stopped", not a failure); 1: a step, row or notebook failed;
# 2: bad options or missing carried files.
#
# --dry-run: device cpu, wheels downloaded from the package index for THIS interpreter (the carried ones are
# cp312), one smoke notebook (02) and tiny rows; about a minute on 2 cores.
#
# Options: --out DIR (default runs/gpu-check-<UTC time>) --budget SECONDS (whole check; GPU 510, dry run 240)
#   --only 01,03 (notebooks) --no-rows --no-smoke (skip the CUDA smoke pass) --no-series --pack DIR (copy
#   gpu_check.json, summary.txt and two .tgz archives there, e.g. $OUT of the device tool) --python PY (default
#   python3) --carry DIR (default .gpu-carry) --keep (keep the temporary prefix) --prepare (= make gpu-wheels)
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=gpu OUT="" BUDGET="" ONLY="" PACK="" PY=python3 CARRY="$REPO/.gpu-carry" KEEP=0
DO_ROWS=1 DO_SMOKE=1 DO_SERIES=1
CARRY_LIMIT=$((64 * 1024 * 1024))
REQUIREMENTS="$REPO/benchmarks/gpu_requirements.txt"
IDX_FILES="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64"

die() { echo "gpu_check: error: $*" >&2; exit 2; }
need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) MODE=dry ;;
    --prepare) MODE=prepare ;;
    --out) need_value "$@"; OUT=$2; shift ;;
    --budget) need_value "$@"; BUDGET=$2; shift ;;
    --only) need_value "$@"; ONLY=$2; shift ;;
    --pack) need_value "$@"; PACK=$2; shift ;;
    --python) need_value "$@"; PY=$2; shift ;;
    --carry) need_value "$@"; CARRY=$2; shift ;;
    --no-rows) DO_ROWS=0 ;;
    --no-smoke) DO_SMOKE=0 ;;
    --no-series) DO_SERIES=0 ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1'; valid options: --dry-run --prepare --out --budget --only --pack --python --carry --no-rows --no-smoke --no-series --keep --help" ;;
  esac
  shift
done
command -v "$PY" >/dev/null || die "--python $PY is not an executable on PATH"
[ -z "$BUDGET" ] || [[ "$BUDGET" =~ ^[0-9]+$ && "$BUDGET" -ge 60 ]] || die "--budget $BUDGET is invalid; give whole seconds >= 60"
[ -z "$ONLY" ] || [[ "$ONLY" =~ ^[0-9]{1,2}(,[0-9]{1,2})*$ ]] || die "--only $ONLY is invalid; give notebook numbers such as 01,03"

# The Fashion-MNIST IDX files: the carried folder, then where `make data` / `aestudy data fetch` leave them.
idx_source() {
  local dir
  for dir in "$CARRY/data/fashion-mnist" "${AESTUDY_DATA:-/nonexistent}/fashion-mnist" "$REPO/data/fashion-mnist" \
             /usr/share/datasets/fashion-mnist; do
    local all=1 f
    for f in $IDX_FILES; do [ -f "$dir/$f" ] || all=0; done
    [ "$all" = 1 ] && { echo "$dir"; return 0; }
  done
  return 1
}

# ------------------------------------------------------------------------------------------ make gpu-wheels
if [ "$MODE" = prepare ]; then
  pins=$(grep -c '==' "$REQUIREMENTS")
  rm -rf "$CARRY/wheels"; mkdir -p "$CARRY/wheels" "$CARRY/data/fashion-mnist"  # one version of each wheel
  echo "==> downloading $pins wheels (cp312 manylinux x86_64, no dependencies) into $CARRY/wheels"
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS \
    -d "$CARRY/wheels" -r "$REQUIREMENTS" || die "pip download failed (see above)"
  got=$(find "$CARRY/wheels" -name '*.whl' | wc -l)
  [ "$got" = "$pins" ] || die "$got wheels downloaded for $pins pins in $REQUIREMENTS"
  src=$(idx_source) || die "no Fashion-MNIST IDX files found; run 'make data' (or aestudy data fetch fashion-mnist)"
  if [ "$src" != "$CARRY/data/fashion-mnist" ]; then
    for f in $IDX_FILES; do cp "$src/$f" "$CARRY/data/fashion-mnist/"; done
  fi
  carry=$(du -sb "$CARRY" | cut -f1)
  tree=$(git -C "$REPO" ls-files -z | (cd "$REPO" && du -cb --files0-from=- 2>/dev/null) | tail -1 | cut -f1)
  total=$((carry + ${tree:-0}))
  printf '==> %s: %d wheels %.1f MiB, data %.1f MiB (from %s); tracked tree %.1f MiB; total %.1f of 64 MiB\n' \
    "$CARRY" "$got" "$(du -sb "$CARRY/wheels" | awk '{print $1 / 1048576}')" \
    "$(du -sb "$CARRY/data" | awk '{print $1 / 1048576}')" "$src" "$(awk "BEGIN{print ${tree:-0} / 1048576}")" \
    "$(awk "BEGIN{print $total / 1048576}")"
  [ "$total" -le "$CARRY_LIMIT" ] || die "what travels ($total bytes) exceeds the device tool's 64 MiB"
  echo "==> carry it: run(command='bash benchmarks/gpu_check.sh --out /tmp/gpu-check --pack \$OUT', carry=['.gpu-carry'])"
  exit 0
fi

# ------------------------------------------------------------------------------------------ the check
if [ "$MODE" = dry ]; then
  DEVICE=cpu; BUDGET=${BUDGET:-240}; ONLY=${ONLY:-02}; ROWS_S=70; DO_SMOKE=0
  ROW_SIZES="--images 1024 --epochs 2 --batch-sizes 128 --compile-batch-sizes 128 --seeds 2 --seed-epochs 1
    --nll-images 32 --nll-k 64 --nll-batch 16 --nll-chunk 64 --compile-backend eager"
else
  DEVICE=cuda; BUDGET=${BUDGET:-510}; ONLY=${ONLY:-01,02,03,04}; ROWS_S=120; ROW_SIZES=""
  ls "$CARRY"/wheels/*.whl >/dev/null 2>&1 \
    || die "no wheels in $CARRY/wheels; run 'make gpu-wheels' on a machine with pip access and carry .gpu-carry"
fi
START=$(date +%s); DEADLINE=$((START + BUDGET))
OUT=${OUT:-$REPO/runs/gpu-check-$(date -u +%Y%m%dT%H%M%SZ)$([ "$MODE" = dry ] && echo -dry)}
[ ! -e "$OUT/setup.tsv" ] || die "--out $OUT already holds a check; give a new folder"
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || die "cannot create --out $OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
SITE="$WORK/site"
[ "$KEEP" = 1 ] || trap 'rm -rf "$WORK"' EXIT
printf '{"mode": "%s", "device": "%s", "budget_s": %d, "only": "%s", "started_epoch": %d, "out": "%s"}\n' \
  "$([ "$MODE" = dry ] && echo dry-run || echo gpu)" "$DEVICE" "$BUDGET" "$ONLY" "$START" "$OUT" > "$OUT/meta.json"

# Everything below runs with these only: the prefix and the checkout on the path, Jupyter/IPython/matplotlib
# state, data and model cache inside the work folder, and no inherited aestudy variables.
unset AESTUDY_PROFILE AESTUDY_METRICS_FILE AESTUDY_NOTEBOOK AESTUDY_RUN_DIR
export PYTHONPATH="$SITE:$REPO" JUPYTER_PATH="$WORK/jupyter/share/jupyter" JUPYTER_CONFIG_DIR="$WORK/jupyter-config" \
  JUPYTER_DATA_DIR="$WORK/jupyter-data" JUPYTER_RUNTIME_DIR="$WORK/jupyter-runtime" JUPYTER_PLATFORM_DIRS=1 \
  IPYTHONDIR="$WORK/ipython" MPLCONFIGDIR="$WORK/mpl" AESTUDY_DATA="$WORK/data" AESTUDY_CACHE="$WORK/models" \
  PYDEVD_DISABLE_FILE_VALIDATION=1 PYTHONUNBUFFERED=1
cd "$REPO" || die "cannot enter $REPO"

NOTE=""
step() {  # step NAME FUNCTION: run it timed, log its output, record (name, status, seconds, note) in setup.tsv
  local name=$1 t0 t1 status
  NOTE=""; t0=$(date +%s.%N)
  echo "==> $name" | tee -a "$OUT/setup.log" >&2
  if "$2" >>"$OUT/setup.log" 2>&1; then status=ok; else status=failed; fi
  t1=$(date +%s.%N)
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(awk "BEGIN{printf \"%.2f\", $t1 - $t0}")" "$NOTE" >> "$OUT/setup.tsv"
  if [ "$status" != ok ]; then
    echo "gpu_check: step '$name' failed; the end of $OUT/setup.log:" >&2; tail -n 25 "$OUT/setup.log" >&2
    return 1
  fi
}

check_device() {
  NOTE=$("$PY" - "$DEVICE" <<'EOF'
import sys, torch
want = sys.argv[1]
if want == "cuda" and not torch.cuda.is_available():
    sys.exit(f"no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}); use --dry-run on a CPU")
name = torch.cuda.get_device_name(0) if want == "cuda" else "cpu"
print(f"{name}, torch {torch.__version__}, Python {sys.version.split()[0]}")
EOF
) || { echo "$NOTE"; return 1; }
}

get_wheels() {
  if [ "$MODE" = gpu ]; then
    WHEELS="$CARRY/wheels"
    NOTE="$(find "$WHEELS" -name '*.whl' | wc -l) carried wheels, $(du -sh "$WHEELS" | cut -f1)"
    return 0
  fi
  # The carried wheels are cp312; the dry run fetches the same pins for this interpreter (unpinned if absent).
  WHEELS="$WORK/wheels"
  if "$PY" -m pip download --no-deps --only-binary=:all: -d "$WHEELS" -r "$REQUIREMENTS"; then
    NOTE="pinned"
  else
    rm -rf "$WHEELS"
    grep '==' "$REQUIREMENTS" | sed 's/==.*//' | xargs "$PY" -m pip download --no-deps --only-binary=:all: \
      -d "$WHEELS" || return 1
    NOTE="unpinned (the pins were not on this index)"
  fi
  NOTE="$(find "$WHEELS" -name '*.whl' | wc -l) wheels for Python $("$PY" -c 'import sys; print(sys.version.split()[0])'), $NOTE"
}

install_wheels() {
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl || return 1
  NOTE=$("$PY" - "$SITE" <<'EOF'
import importlib, sys
site = sys.argv[1]
names = ["papermill", "nbclient", "nbformat", "jupyter_client", "ipykernel", "ipywidgets", "zmq", "filelock"]
outside = [n for n in names if not importlib.import_module(n).__file__.startswith(site)]
if outside:
    sys.exit(f"imported from outside the prefix {site}: {', '.join(outside)}")
import papermill
print(f"{len(names)} Jupyter modules import from the prefix (papermill {papermill.__version__})")
EOF
) || { echo "$NOTE"; return 1; }
}

import_aestudy() {  # every aestudy module, so a package the machine lacks shows here, not inside a notebook
  NOTE=$("$PY" - <<'EOF'
import importlib, pkgutil, sys
import aestudy
names = [m.name for m in pkgutil.walk_packages(aestudy.__path__, "aestudy.")]
failed = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
if failed:
    sys.exit("cannot import " + "; ".join(failed))
print(f"{len(names)} aestudy modules import")
EOF
) || { echo "$NOTE"; return 1; }
}

register_kernel() {
  "$PY" -m ipykernel install --prefix "$WORK/jupyter" --name aestudy --display-name "Python (aestudy, gpu check)" \
    || return 1
  "$PY" -m benchmarks.gpu_check kernel-env "$JUPYTER_PATH/kernels/aestudy" "PYTHONPATH=$PYTHONPATH" \
    "PYDEVD_DISABLE_FILE_VALIDATION=1" || return 1
  NOTE=$("$PY" - "$WORK" <<'EOF'
import sys
from jupyter_client.kernelspec import KernelSpecManager
spec = KernelSpecManager().get_kernel_spec("aestudy")
if not spec.resource_dir.startswith(sys.argv[1]) or spec.argv[0] != sys.executable:
    sys.exit(f"kernel 'aestudy' resolves to {spec.resource_dir} ({spec.argv[0]}), not the check's")
print(f"kernel 'aestudy' -> {spec.argv[0]}")
EOF
) || { echo "$NOTE"; return 1; }
}

unpack_data() {
  local src f
  src=$(idx_source) || { echo "no Fashion-MNIST IDX files in $CARRY/data/fashion-mnist (make gpu-wheels)"; return 1; }
  mkdir -p "$AESTUDY_DATA/fashion-mnist"
  for f in $IDX_FILES; do cp "$src/$f" "$AESTUDY_DATA/fashion-mnist/" || return 1; done
  "$PY" -m benchmarks.gpu_check aestudy data fetch fashion-mnist --no-progress || return 1
  NOTE="4 IDX files from $src, decoded and verified"
}

run_rows() {  # the rows process saves rows.json after every row; exit 1 = a row failed (counted there)
  local now rc
  now=$(date +%s)
  # shellcheck disable=SC2086
  timeout -k 10 $((ROWS_S + 60)) "$PY" -m benchmarks.gpu_check rows --device "$DEVICE" --out "$OUT" \
    --deadline $((now + ROWS_S)) $ROW_SIZES
  rc=$?
  NOTE="exit $rc"
  [ "$rc" -le 1 ]
}

run_series() {  # run_series PROFILE DEADLINE [NOTEBOOK_CAP_S]
  local rc
  timeout -k 10 $(($2 - $(date +%s) + 90)) "$PY" -m benchmarks.gpu_check series --profile "$1" --device "$DEVICE" \
    --only "$ONLY" --out "$OUT/series-$1" --deadline "$2" --notebook-cap "${3:-inf}"
  rc=$?
  NOTE="exit $rc"
  [ "$rc" -le 1 ]
}
# The CUDA smoke pass: <= 45 s per notebook, and it leaves the full pass at least 150 s.
series_smoke() { run_series smoke "$(( $(date +%s) + 180 < DEADLINE - 150 ? $(date +%s) + 180 : DEADLINE - 150 ))" 45; }
series_main() { run_series "$([ "$MODE" = dry ] && echo smoke || echo full)" "$DEADLINE"; }

ok=1
step "device" check_device && step "wheels" get_wheels && step "install into a temporary prefix" install_wheels \
  && step "aestudy imports" import_aestudy && step "kernel" register_kernel && step "data" unpack_data || ok=0
if [ "$ok" = 1 ]; then
  [ "$DO_ROWS" = 0 ] || step "rows (process)" run_rows
  [ "$DO_SERIES" = 0 ] || [ "$DO_SMOKE" = 0 ] || step "series smoke on cuda (process)" series_smoke
  [ "$DO_SERIES" = 0 ] || step "series (process)" series_main
fi
"$PY" -m benchmarks.gpu_check summary "$OUT"
rc=$?

if [ -n "$PACK" ]; then  # the device tool brings back <= 8 files of <= 16 MiB each
  mkdir -p "$PACK" && cp "$OUT/gpu_check.json" "$OUT/summary.txt" "$PACK/" || rc=1
  tar -czf "$PACK/gpu-check.tgz" -C "$(dirname "$OUT")" --exclude='*.ipynb' "$(basename "$OUT")" || rc=1
  (cd "$(dirname "$OUT")" && find "$(basename "$OUT")" -name '*.ipynb' -path '*series-*/runs/*' -print0 \
    | tar -czf "$PACK/gpu-notebooks.tgz" --null -T -) || rc=1
  ls -l "$PACK" >&2
fi
exit "$rc"
