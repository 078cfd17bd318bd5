#!/usr/bin/env bash
# One-call H200 check of issue 11: proxy training throughput (MFU, tokens/s) and CLIP embedding images/s.
#
# Wheels to carry in .whl/ (the H200 image lacks pydantic; faiss, lightgbm and ray are not imported here):
#   pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
#   typing_extensions==4.16.0
# Device run (repo root, carry .whl):  bash bench/gpu/h200.sh            (at most 9.5 minutes: run timeout_s 600)
# CPU dry run of the same script:      bash bench/gpu/h200.sh --tiny     (toy sizes, a few minutes)
set -u -o pipefail
TINY=0; [ "${1:-}" = "--tiny" ] && TINY=1
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
LOG="$OUT/h200.log"
export USE_HUB_KERNELS=NO HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ -d .whl ] && ! python3 -c "import pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed" | tee -a "$LOG"; exit 1; }
  export PYTHONPATH=/tmp/site:src
else
  export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
fi
PY=${PY:-python3}
WORK=${WORK:-/tmp/mixatlas-gpu}
step() {  # step SECONDS NAME CMD...: run with a timeout, log everything, never stop the script
  local limit=$1 name=$2; shift 2
  echo "=== $name (timeout ${limit}s) $(date -u +%T)" | tee -a "$LOG"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  echo "=== $name: exit ${PIPESTATUS[0]} $(date -u +%T)" | tee -a "$LOG"
}
if [ $TINY = 1 ]; then
  P="--tiny --steps 2 --warmup 1 --distinct-batches 2 --gpu-batch 4,8"
  E="--tiny --images 120 --workers 2 --batch-size 32 --repeats 1"
  BIG=8; SMALL=4; WORKERS=2; LIMIT_P=120; LIMIT_T=150; LIMIT_C=200; LIMIT_E=150; LIMIT_F=90
else
  P="--steps 8 --warmup 3 --gpu-batch 16,64"
  E="--gpu --images 8000 --workers 14 --batch-size 256 --repeats 2"
  BIG=64; SMALL=16; WORKERS=14; LIMIT_P=120; LIMIT_T=100; LIMIT_C=170; LIMIT_E=120; LIMIT_F=55
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee -a "$LOG"
fi
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$LOG"
# (a) proxy steps, uncompiled: batch 16 and 64 x 704 tokens, packed rows, chunked CE, fused AdamW, bf16
step $LIMIT_P proxy-eager $PY bench/bench_proxy.py --throughput --gpu $P --tag _eager
# (a-t) the same model through the trainer's real path: its step runner fed by streamed batches (640x480
#       JPEGs decoded, resized, encoded and packed by DataLoader workers into pinned memory)
step $LIMIT_T proxy-trainer $PY bench/bench_proxy.py --throughput --gpu $P --data-path trainer --workers $WORKERS \
  --work "$WORK/proxy" --tag _trainer
# (b) CLIP ViT-L/14-336 decompose end to end on 640x480 JPEGs, 14 decode workers
step $LIMIT_E embed $PY bench/bench_embed.py $E --work "$WORK/embed"
# (a') the same proxy steps under torch.compile (compile time is reported as warmup_s)
step $LIMIT_C proxy-compiled $PY bench/bench_proxy.py --throughput --gpu $P --compile --gpu-batch $BIG --tag _compiled
# (a0) before: the full-logits loss on padded rows (the old path), batch 16
step $LIMIT_F proxy-full-logits $PY bench/bench_proxy.py --throughput --gpu $P --loss full --gpu-batch $SMALL --tag _full
cp bench/out/proxy_throughput_gpu_eager.json bench/out/proxy_throughput_gpu_trainer.json \
   bench/out/proxy_throughput_gpu_compiled.json bench/out/proxy_throughput_gpu_full.json \
   bench/out/embed_throughput_*.json "$OUT"/ 2>/dev/null
echo "=== done $(date -u +%T); files in $OUT:" | tee -a "$LOG"; ls "$OUT" | tee -a "$LOG"
