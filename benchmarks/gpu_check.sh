#!/usr/bin/env bash
# One lease of a GPU machine, start to end: install, the throughput benchmark (the engine compiled, a profile of
# its step; then ranks 16, 64 and 256 together, at batch 256 and at the paper's batch of 24), the
# patch-embedding kernels, the students' shared SVD init, the CUDA tests, and an end-to-end ViT-B/32 run on
# synthetic CIFAR-100 files. About 7 minutes on 2026-11-26 (5 before the ranks step, which took under 2),
# before the batch-24 step was added (not yet measured). Full logs under $OUT, a summary on stdout.
# Carry pydantic's wheels in .whl where the machine lacks them (README, "Measured on a GPU").
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 EFFRANK_BENCH_CACHE=/tmp/effrank-cache EFFRANK_BENCH_DATA=/tmp/effrank-data
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site || exit 1
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { tail "$OUT/install.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"
python3 benchmarks/synthetic_cifar.py "$EFFRANK_BENCH_DATA" --train 5120 --test 1024

# Which steps to run, e.g. STEPS=throughput. Not among the default ones (a lease of its own, minutes of compiling
# sixteen students): throughput_paper_grid.
STEPS=${STEPS:-throughput throughput_ranks throughput_paper_batch patch_embed svd_init cuda_tests run}
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, print its tail
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    [[ " $STEPS " == *" $name "* ]] || return 0
    echo "== $name: $*"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "-- $name: exit $? after $((SECONDS - start)) s"
    grep -v "^\s*$" "$OUT/$name.log" | tail -n "${TAIL:-8}"
}
# perf_hints: torch says why it skips CUDA graphs, if it does.
TORCH_LOGS=perf_hints TAIL=40 step throughput 240 python3 benchmarks/throughput.py --profile 3
grep -ih "cudagraph" "$OUT/throughput.log" 2>/dev/null | cut -c1-200 | sort | uniq -c | sort -rn | head -n 8
# A real sweep's group: one student of each of three ranks, as the paper grid's groups hold (one seed each).
TAIL=4 step throughput_ranks 200 python3 benchmarks/throughput.py --ranks 16,64,256 --steps 10
# The same group at the paper's student batch (paper_vit_b32_cifar100.toml: 24), what its sweep really costs.
TAIL=4 step throughput_paper_batch 200 python3 benchmarks/throughput.py --ranks 16,64,256 --batch-size 24 --steps 40
# The paper grid's sixteen students in one group, as --group auto lays them out on one large GPU: one teacher
# pass feeds sixteen students instead of three (STEPS=throughput_paper_grid).
TAIL=4 step throughput_paper_grid 480 python3 benchmarks/throughput.py \
    --ranks 2,4,8,16,24,32,48,64,80,96,112,128,160,192,224,256 --steps 10
TAIL=6 step patch_embed 60 python3 benchmarks/patch_embed.py
TAIL=2 step svd_init 60 python3 benchmarks/svd_init.py --ranks 8,16,32,64
TAIL=15 step cuda_tests 120 python3 -m pytest -q -n 0 -rs tests/test_cuda.py tests/test_sweep.py tests/test_measure.py tests/test_patch_embed.py -k cuda
TAIL=25 step run 120 python3 -m effrank_bench.cli run --arch vit_b32 --target joint --dataset cifar100 \
    --ranks 16,32 --epochs 1 --teacher-epochs 1 --group auto --out /tmp/effrank-run
