#!/usr/bin/env bash
# GPU readiness check, for a session that is lent a CUDA machine (the device tool runs it in
# the repository root; results go under $OUT, default /tmp/gpu-check). Budget: < 10 minutes.
#   1. the GPU-marked tests;
#   2. `relatent bench speed` on CUDA (short protocol);
#   3. a stream with a GOP encoded on the GPU (refined, P frames) decodes on the CPU: the
#      decoder checks every frame's symbols CRC, so success means bit-identical latents;
#      the decoded frames are compared with a CPU encode's (8-bit values within 1 LSB);
#   4. the same for a rate-controlled stream (--target-psnr: several rate points, version 4).
# Copy what it prints into docs/benchmarks/gpu.md with the date and the device.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
[ -x .venv/bin/python ] || scripts/setup.sh
PY=.venv/bin/python
RL=.venv/bin/relatent
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('device:', torch.cuda.get_device_name(0))"

echo "== 1. GPU-marked tests"
timeout 240 $PY -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tail -5 | tee "$OUT/gpu-tests.txt"

echo "== 2. bench speed on CUDA"
KODAK=../shared/data/kodak
if [ -d "$KODAK" ]; then
  timeout 240 $RL bench speed --devices cuda --kodak "$KODAK" --out "$OUT/speed" \
    --speed-budgets 0 25 --sizes 256 --batches 1 4 --repeats 2 --decode-frames 4 --max-seconds 30 \
    2>&1 | tail -5
  cp "$OUT/speed/speed.md" "$OUT/speed.md" 2>/dev/null || true
else
  echo "no $KODAK: bench speed skipped"
fi

echo "== 3. encoded on the GPU, decoded on the CPU"
SRC=tests/data/golden_src.mkv
OPTS=(--refine sga --lr 5e-3 --iters 5 --gop 3 --no-progress)
timeout 120 $RL encode "$SRC" "$OUT/gpu.rlv" --device cuda "${OPTS[@]}"
timeout 120 $RL encode "$SRC" "$OUT/cpu.rlv" --device cpu "${OPTS[@]}"
timeout 120 $RL decode "$OUT/gpu.rlv" "$OUT/gpu.y4m" --device cpu --no-progress  # CRC-checked latents
timeout 120 $RL decode "$OUT/cpu.rlv" "$OUT/cpu.y4m" --device cpu --no-progress
$PY - "$OUT" <<'PY'
import sys
import numpy as np
from pipeline.bitstream import StreamReader
from pipeline.media import read_frames
out = sys.argv[1]
with StreamReader(f"{out}/gpu.rlv") as g, StreamReader(f"{out}/cpu.rlv") as c:
    types = [s.frame_type for s in g.stats]
    same = [a.latent_crc == b.latent_crc for a, b in zip(g, c)]
print("GPU stream version", g.version, "frame types", "".join(types))
print("frames whose latents equal the CPU encode's:", sum(same), "of", len(same), "(refinement on another device may differ)")
a = [f.rgb for f in read_frames(f"{out}/gpu.y4m")]
print("GPU stream decoded on the CPU:", len(a), "frames, symbols CRC verified for every frame")
PY
echo "== 4. a rate-controlled stream (format version 4: a rate point per GOP) from the GPU, decoded on the CPU"
timeout 150 $RL encode "$SRC" "$OUT/gpu-target.rlv" --device cuda --refine sga --iters 5 --gop 3 \
  --target-psnr 24 --no-progress 2>&1 | tail -2
timeout 120 $RL decode "$OUT/gpu-target.rlv" "$OUT/gpu-target.y4m" --device cpu --no-progress  # CRC-checked latents
$RL info "$OUT/gpu-target.rlv" --frames | tail -n +1 | head -20
echo "gpu-check: done"
