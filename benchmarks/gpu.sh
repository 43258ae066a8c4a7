#!/usr/bin/env bash
# The GPU checks, one script (run on a lent GPU machine from the repository root; results go to $OUT).
# Data: the Fashion-MNIST IDX files and names.txt copied into .gpu_data/ (not committed).
set -u
export PYTHONPATH="$PWD" JAXLEARN_FASHION_MNIST_DIR="$PWD/.gpu_data/fashion_mnist" \
       JAXLEARN_NAMES_PATH="$PWD/.gpu_data/names.txt" MPLBACKEND=Agg XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT="${OUT:-runs/gpu}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__)" | tee -a "$OUT/device.txt"
run() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; echo "rc=$? $name"; tail -n 25 "$OUT/$name.log" | grep -v '^\s*$' | tail -n 18; }
# The lesson-17 CNN and makemore figures first (BENCHMARKS.md still lacks them); GPU_RESNET=1 adds the ResNet runs.
run speed 180 python3 benchmarks/fashion_mnist_speed.py --out "$OUT"
# With torch there (its loop runs on the CPU at ~2k steps/s) a 20k-step comparison; without, JAX's full 200k run.
mm_args=$(python3 -c "import torch" 2>/dev/null && echo "--steps 20000" || echo "--steps 200000 --jax-only")
run makemore 150 python3 benchmarks/makemore_speed.py --no-results $mm_args
if [ "${GPU_RESNET:-0}" = 1 ]; then
  run resnet5 150 python3 experiments/resnet.py --epochs 5 --no-progress --out "$OUT/resnet5"
  run resnet20 240 python3 experiments/resnet.py --epochs 20 --augment --tta --tta-n 4 --lr 4e-2 --no-progress --out "$OUT/resnet20"
  cp "$OUT"/resnet5/results.json "$OUT/resnet5.json" 2>/dev/null; cp "$OUT"/resnet20/results.json "$OUT/resnet20.json" 2>/dev/null
fi
# CIFAR-10's lesson-7 ladder, when cifar-10-binary.tar.gz was copied into .gpu_data/cifar10/ (the machine is offline)
if [ -f "$PWD/.gpu_data/cifar10/cifar-10-binary.tar.gz" ]; then
  JAXLEARN_CIFAR10_DIR="$PWD/.gpu_data/cifar10" run cifar10 600 python3 experiments/cifar10.py --no-progress --out "$OUT/cifar10"
  cp "$OUT"/cifar10/results.json "$OUT/cifar10.json" 2>/dev/null
fi
