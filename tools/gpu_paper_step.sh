#!/usr/bin/env bash
# The paper's GRPO step at real size on one GPU, every variant (tools/bench_paper.py): one JSON per
# variant and a log in $OUT (default runs/gpu_paper_step), written as each finishes, so a run cut
# short keeps what it measured. Pick and order variants with VARIANTS="c2i c2i-fast ..." (default:
# all, most informative first); each is capped at LIMIT seconds (default 420).
#   tools/gpu_paper_step.sh                       # every variant, in ORDER
#   VARIANTS="c2i c2i-fast" LIMIT=300 tools/gpu_paper_step.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_paper_step}
LIMIT=${LIMIT:-420}
mkdir -p "$OUT"
PY=${PYTHON:-python}
declare -A FLAGS=(
  [c2i]="--preset paper-c2i-xl384"                                  # the paper's: fp32 rollout, eager, judge generate
  [c2i-fast]="--preset paper-c2i-xl384 --judge-mode fast"           # the judge as one forward pass
  [c2i-bf16]="--preset paper-c2i-xl384 --rollout-dtype bf16"        # rollout + VQ decode under bf16 autocast
  [t2i]="--preset paper-t2i-xl"                                     # FLAN-T5-XL, pure bf16, 2 x 8 images
  [c2i-judge1]="--preset paper-c2i-xl384 --judge-batch 1"           # the paper's judge: one image per call
  [c2i-compile]="--preset paper-c2i-xl384 --compile"                # compiled sampler (compiles in step 1)
  [c2i-micro4]="--preset paper-c2i-xl384 --micro-batch 4"           # log-prob / update passes of 4 sequences
  [c2i-bf16-fast-compile]="--preset paper-c2i-xl384 --rollout-dtype bf16 --judge-mode fast --compile"
)
ORDER="c2i c2i-fast c2i-bf16 t2i c2i-judge1 c2i-compile c2i-micro4 c2i-bf16-fast-compile"
for v in ${VARIANTS:-$ORDER}; do   # a typo stops it before the GPU is used
  [ -n "${FLAGS[$v]:-}" ] || { echo "unknown variant $v; known: $ORDER"; exit 2; }
done
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  $PY -c "import torch; print('torch', torch.__version__, '| cuda', torch.version.cuda, '|',
          torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO GPU')"
  $PY tools/bench_paper.py --weights --preset paper-c2i-xl384
  $PY tools/bench_paper.py --weights --preset paper-t2i-xl
} 2>&1 | tee "$OUT/device.txt"
for v in ${VARIANTS:-$ORDER}; do
  echo "=== $v: ${FLAGS[$v]}" | tee -a "$OUT/log.txt"
  timeout "$LIMIT" $PY tools/bench_paper.py --size real --steps 2 ${FLAGS[$v]} \
    --json "$OUT/$v.json" 2>&1 | grep -v Warning | tee -a "$OUT/log.txt"
  echo "exit ${PIPESTATUS[0]} ($v)" | tee -a "$OUT/log.txt"
done
