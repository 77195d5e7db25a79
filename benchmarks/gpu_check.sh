#!/usr/bin/env bash
# The GPU checks of the speed work in one prepared run, for a session lent a GPU for minutes:
#   bash benchmarks/gpu_check.sh [OUT] [gpu_check.py options]
# Try it on a CPU first: bash benchmarks/gpu_check.sh /tmp/gc --device cpu --quick --steps 1 --repeats 1
# It records nvidia-smi, runs benchmarks/gpu_check.py (every demo in bf16 and fp32,
# torch.compile, StackGAN-v2 birds at paper size, SGAN-CIFAR10), then DDP with NCCL on
# 2 processes where 2 GPUs exist. Everything lands in OUT (default benchmarks/results/gpu_check).
set -uo pipefail
OUT=${1:-benchmarks/results/gpu_check}
shift || true
PY=${PYTHON:-python}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi: not available" > "$OUT/nvidia-smi.txt"
"$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -ge 2 ]; then
  if timeout 600 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 -m ganstack \
      train dcgan-mnist --out "$OUT/ddp-run" --no-eval train.device=cuda \
      train.phases.train=100 train.progress=false > "$OUT/ddp.log" 2>&1; then
    echo "DDP (NCCL, 2 processes, dcgan-mnist, 100 steps): ok" | tee -a "$OUT/ddp.log"
  else
    echo "DDP (NCCL, 2 processes): FAILED, see $OUT/ddp.log" | tee -a "$OUT/ddp.log"
  fi
else
  echo "DDP: skipped, this machine has $NGPU GPU(s)" | tee "$OUT/ddp.log"
fi
