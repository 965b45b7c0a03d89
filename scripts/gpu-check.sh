#!/usr/bin/env bash
# There (a lent GPU machine, through the `run` tool with carry [".whl"]): issue 6's GPU checks in one go.
#
#   run(command="bash scripts/gpu-check.sh", carry=[".whl"], timeout_s=600)   # after scripts/gpu-wheels.sh here
#
# Installs the carried wheels and barkstream into /tmp/site, runs the GPU tests (CUDA-graph decoder,
# bf16, int8 on CUDA; flash-attn ones skip unless the package is there), then the quick stage, stage cost
# and service benchmarks on CUDA (bf16 servers), and leaves their JSON and the log under $OUT. Written without a GPU
# at hand (none was lent when it was written): expect its first run to need small fixes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
{
    set -e
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site .
    python3 -c "import torch, barkstream.services.stages.models as m; print(torch.__version__, torch.cuda.get_device_name(0))"
    set +e
    timeout 180 python3 -m pytest -q -m gpu tests/test_perf_paths.py -rs
    timeout 240 python3 -m benchmarks stages --quick --device cuda
    # issue 17's input: engine step cost against batch size on this GPU (python -m benchmarks capacity sizes from it)
    timeout 120 python3 -m benchmarks costs --quick --device cuda
    timeout 240 python3 -m benchmarks service --quick --device cuda --service-dtype bfloat16
    cp benchmarks/out/*.json "$OUT"/ 2>/dev/null
} 2>&1 | tee "$OUT/gpu-check.log"
