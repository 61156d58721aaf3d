#!/usr/bin/env bash
# One prepared accelerator run, in under 10 minutes of wall time, compilation included:
#   bash bench/gpu.sh            on a GPU machine without a package registry (Python 3.12 with
#                                jax + CUDA plugin, flax, optax, orbax, torch preinstalled)
#   bash bench/gpu.sh --smoke    the same code paths at tiny sizes on the CPU; installs nothing
#                                and checks instead that every wheel named here is in $WHEELS
#                                for CPython 3.12 on manylinux x86-64
# Run from anywhere; it works in the repository root. It checks that JAX sees the GPU (else it
# stops); installs what the machine lacks from $WHEELS (no index; default ../shared/wheels,
# else shared/wheels in the checkout) and jaxspeech itself with --no-deps; reads recordings
# from $JAXSPEECH_DATA (default ../shared/data, else shared/data); then runs each part of
# `python -m bench.gpu` in its own process under its own time limit. Each part appends its figures to $OUT/results.jsonl as they
# exist (OUT defaults to bench/out), so a part cut short keeps what it measured; the log goes
# to $OUT/gpu.log. Last, the report renders $OUT/gpu-section.md and, on a GPU, rewrites the
# generated section of bench/RESULTS.md (`python -m bench.gpu report --out DIR --results
# bench/RESULTS.md` does the same from a results folder copied back).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# The wheels and the recordings: ../shared beside the checkout, else shared/ inside it (a
# folder that travels with the checkout where ../shared does not).
[ -z "${WHEELS:-}" ] && [ ! -d ../shared/wheels ] && [ -d shared/wheels ] && WHEELS=shared/wheels
WHEELS="${WHEELS:-../shared/wheels}"
if [ -z "${JAXSPEECH_DATA:-}" ] && [ ! -d ../shared/data ] && [ -d shared/data ]; then
  export JAXSPEECH_DATA="$PWD/shared/data"
fi
OUT="${OUT:-bench/out}"
SMOKE=""
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE="--smoke" ;;
    *) echo "bench/gpu.sh: unknown argument $arg; use --smoke or nothing" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu.log") 2>&1

# What jaxspeech needs beyond the machine's image, then Asteroid 0.7.0 and what it needs.
RUNTIME_WHEELS=(grain array_record portpicker soundfile cffi pycparser soxr pystoi)
PEER_WHEELS=(asteroid asteroid_filterbanks julius torch_optimizer pytorch_ranger pb_bss_eval
  torch_stoi)
PESQ_SDIST="pesq-0.0.4.tar.gz"
# Parts in order: name, time limit (s), least time worth a start (s). The curve gets what is
# left, up to its limit. Sum of limits with the install and report: under 10 minutes.
if [ -n "$SMOKE" ]; then
  BUDGET=420
  PARTS=("env 60 10" "tasnet 90 20" "speaker 90 20" "ivector 60 10" "pipeline 60 10"
    "curve 120 30")
else
  BUDGET=560
  PARTS=("env 40 10" "tasnet 150 60" "speaker 110 40" "ivector 40 15" "pipeline 40 15"
    "curve 240 60")
fi
REPORT_RESERVE=15

record_skip() {  # part, reason (no double quotes)
  printf '{"part": "%s", "what": "skipped", "reason": "%s"}\n' "$1" "$2" >>"$OUT/results.jsonl"
  echo "skipped $1: $2"
}

check_wheels() {  # resolves every wheel name against $WHEELS for the GPU machine's Python
  local target
  target="$(mktemp -d)"
  "$PYTHON" -m pip install --dry-run --quiet --no-index --find-links "$WHEELS" --no-deps \
    --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 \
    --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any --target "$target" \
    "${RUNTIME_WHEELS[@]}" "${PEER_WHEELS[@]}"
  local status=$?
  rm -rf "$target"
  [ -f "$WHEELS/$PESQ_SDIST" ] || { echo "missing $WHEELS/$PESQ_SDIST"; return 1; }
  return $status
}

install() {
  local pip=("$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation)
  "${pip[@]}" --find-links "$WHEELS" "${RUNTIME_WHEELS[@]}" "${PEER_WHEELS[@]}" || return 1
  "$PYTHON" -c "import pesq" 2>/dev/null || "${pip[@]}" "$WHEELS/$PESQ_SDIST" || return 1
  "${pip[@]}" -e . || return 1
}

start=$SECONDS
echo "bench/gpu.sh ${SMOKE:-(accelerator run)}: $(date -u '+%Y-%m-%d %H:%M UTC'), results in $OUT"
if [ -z "$SMOKE" ]; then  # before installing anything
  backend="$("$PYTHON" -c 'import jax; print(jax.default_backend())')"
  if [ "$backend" != "gpu" ]; then
    echo "JAX sees no GPU (its backend is ${backend:-none}); stopping. On a CPU: --smoke"; exit 1
  fi
fi
if [ -n "$SMOKE" ]; then
  export JAX_PLATFORMS=cpu
  if [ -d "$WHEELS" ]; then
    check_wheels && echo "wheels: every name resolves in $WHEELS for CPython 3.12 x86-64" \
      || { echo "wheels: a name does not resolve in $WHEELS (above)"; exit 1; }
  else
    echo "wheels: not checked, $WHEELS not found"
  fi
  echo "install: skipped in a smoke run (it would change this Python's packages)"
elif [ ! -d "$WHEELS" ]; then
  echo "install: $WHEELS not found; set WHEELS to the wheel folder"; exit 1
else
  install || { echo "install: failed (above); stopping"; exit 1; }
  echo "install: done in $((SECONDS - start)) s"
fi
if ! "$PYTHON" -c "import jaxspeech.train.tasks.separation, grain, soundfile, soxr, pesq"; then
  echo "jaxspeech does not import with $PYTHON (above); stopping"; exit 1
fi

for entry in "${PARTS[@]}"; do
  read -r part limit least <<<"$entry"
  left=$((BUDGET - (SECONDS - start) - REPORT_RESERVE))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt "$least" ]; then
    record_skip "$part" "a start needs ${least} s; ${left} s of the run were left"
    continue
  fi
  echo "== $part (limit ${limit} s, $((SECONDS - start)) s into the run)"
  timeout -k 10 "$limit" "$PYTHON" -m bench.gpu "$part" --out "$OUT" --seconds "$limit" $SMOKE
  status=$?
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    record_skip "$part" "cut at its limit of ${limit} s; what it wrote before is kept"
  elif [ "$status" -ne 0 ]; then
    record_skip "$part" "failed with exit status ${status}; see gpu.log"
  fi
done

results=()
[ -z "$SMOKE" ] && results=(--results bench/RESULTS.md)
"$PYTHON" -m bench.gpu report --out "$OUT" "${results[@]}"
echo "bench/gpu.sh: $((SECONDS - start)) s in all"
