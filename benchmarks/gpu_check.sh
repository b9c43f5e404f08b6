#!/usr/bin/env bash
# The GPU check: on a CUDA machine, hpsearch as the README installs it, on the GPU. Under 8 minutes.
#
#     bash benchmarks/gpu_check.sh [DATA_ROOT]
#
# DATA_ROOT holds cifar-10-batches-bin; left out, it is rebuilt from ../shared/datasets (no network
# needed). Runs the smoke spec and the lecture's coarse search (configs/cifar10_coarse.yaml, 36
# trials of 1 epoch) with train.device cuda: populations (hpsearch's default) against one trial at a
# time (--population 1), each in fp32 and in bf16, and prints one table: wall seconds, trials per
# minute and the best validation accuracy of each way. Nothing is installed beyond the README's
# command; an environment that already has hpsearch is used as it is. GPU_CHECK_DEVICE=cpu runs the
# same on the CPU (a check of the script itself where no GPU is lent).
set -euo pipefail
cd "$(dirname "$0")/.."
device=${GPU_CHECK_DEVICE:-cuda}
if [ "$device" = cuda ]; then
    python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this check is for a GPU machine')"
fi
python -c "import hpsearch" 2>/dev/null || pip install -q -e ".[dev]"
python -c "import torch, sys; p = torch.cuda.get_device_properties(0) if sys.argv[1] == 'cuda' else None; \
print(f'{p.name}, capability {p.major}.{p.minor}' if p else 'CPU', f'torch {torch.__version__}')" "$device"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=${1:-}
if [ -z "$root" ]; then
    root="$work/cifar10"
    python ../shared/datasets/make_cifar10_bin.py "$root" >/dev/null
fi

spec_on_gpu() {  # SPEC PRECISION -> a copy with train.device cuda and train.precision PRECISION
    local out="$work/$(basename "$1" .yaml)-$2.yaml"
    sed -e "s/^\(  device:\).*/\1 $device/" -e "s/^train:$/train:\n  precision: $2/" "$1" > "$out"
    echo "$out"
}

best() {  # RUN -> the best validation accuracy of its coarse stage
    python -c "import json, sys; r = json.load(open(sys.argv[1] + '/coarse/results.json'))['ranked']; \
print(max((t['val_acc'] or 0) for t in r))" "$1"
}

rows=()
run_way() {  # NAME SPEC EXTRA... (--population 1 for one at a time; by default, populations)
    local name=$1 spec=$2
    shift 2
    local out="$work/run-${name// /-}" start end
    start=$(date +%s.%N)
    hpsearch coarse "$spec" --out "$out" --data-root "$root" "$@" >/dev/null 2>"$out.err" \
        || { cat "$out.err"; exit 1; }
    end=$(date +%s.%N)
    rows+=("$(python -c "import sys; n, t, tr, acc = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]; \
print(f'{n:<28} {t:8.1f} {tr / t * 60:10.1f} {acc:>8}')" "$name" "$(echo "$end - $start" | bc)" "$TRIALS" "$(best "$out")")")
}

TRIALS=8
for precision in fp32 bf16; do
    run_way "smoke $precision" "$(spec_on_gpu configs/smoke.yaml "$precision")"
done
TRIALS=36
for precision in fp32 bf16; do
    spec=$(spec_on_gpu configs/cifar10_coarse.yaml "$precision")
    run_way "coarse population $precision" "$spec" --trials 36 --epochs 1
    run_way "coarse one at a time $precision" "$spec" --population 1 --trials 36 --epochs 1
done

printf '%-28s %8s %10s %8s\n' way wall_s trials/min best_val
printf '%s\n' "${rows[@]}"
