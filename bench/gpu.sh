#!/usr/bin/env bash
# The GPU checks in one run, for a machine with a CUDA device: the CUDA tests, the training benchmark (bf16
# autocast, through the embedded service and as a bare loop) and the loss benchmark under bf16 autocast and in
# fp32, the chunked path's tile swept for the GPU. Each step has its own time limit; one failing does not stop
# the next. Results land in OUTDIR (default bench/results/gpu). About 9 minutes on the H200 (under the device
# tool's 10-minute limit for one command, with little to spare).
#
#     bash bench/gpu.sh [OUTDIR]
#
# Where the machine lacks some of the project's packages, put their wheels in .whl/ (bench/gpu-wheels.txt lists
# those the lent H200's image lacked, and how to fetch them): they are installed into /tmp/site first. lightly's
# wheel is read from bench/.cache (`make bench` fetches it).
set -u
out=${1:-bench/results/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

step() {  # step NAME SECONDS COMMAND...: run it with a limit, log it, say how it ended
  local name=$1 limit=$2 began=$SECONDS
  shift 2
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - began)) s"
  # a benchmark's log only where it failed (its JSON holds the figures): the device tool returns at most 8 files
  if [ "$rc" = 0 ] && [ "$name" != tests-cuda ]; then rm -f "$out/$name.log"; fi
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
step tests-cuda 150 python3 -m pytest -q -p no:cacheprovider tests/core/test_cuda.py
tail -5 "$out/tests-cuda.log"
step train 170 python3 bench/train.py --device cuda --rounds 3 --steps 300 --out "$out/train-cuda.json"
# under bf16 the loss benchmark adds ours with bf16 similarity products (ours_*_bf16): two more processes, so the
# sizes stop at 32k here (the fp32 step below and the GPU round of 2026-11-30 measured the reach)
step loss-bf16 200 python3 bench/loss.py --device cuda --precision bf16 --timeout 60 \
  --sizes 256 1024 4096 8192 16384 32768 --out "$out/loss-cuda-bf16.json"
chunk=$(python3 -c "import json; print(json.load(open('$out/loss-cuda-bf16.json'))['chunk_sweep']['chosen'])" 2>/dev/null)
step loss-fp32 90 python3 bench/loss.py --device cuda --precision fp32 --timeout 40 --chunk-sweep "${chunk:-4096}" \
  --sizes 256 1024 4096 8192 16384 32768 65536 --out "$out/loss-cuda-fp32.json"
step train-b1024 190 python3 bench/train.py --device cuda --rounds 3 --steps 150 --batch 1024 \
  --out "$out/train-cuda-b1024.json"
python3 bench/report.py "$out"
