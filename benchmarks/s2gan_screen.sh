#!/bin/bash
# The S²-GAN anti-collapse screening of docs/s2gan.md ("Study 2"), as it was run: short
# `ganstack train s2gan-rooms` runs at one thread each, two at a time, scored by `ganstack eval`
# and, for the Style-GAN rows, by the independent judge FCN of benchmarks/s2gan_fcn.py.
#
#   bash benchmarks/s2gan_screen.sh [WORK]      # WORK: where the runs go (default runs/s2screen)
#
# 1. Structure-GAN levers: the structure phase alone (3,000 steps; the other phases 1 step),
#    seeds 0 and 1, scored with `--metrics structure` (diversity: pairwise angle; realism:
#    angle to the nearest real map).
# 2. Style-GAN levers, seed 0: the demo's fcn / style / joint phases (300 / 2,500 / 50 steps)
#    on the Structure-GAN of the width-1/4 mode-seeking run of step 1 (`train.init_from`),
#    scored with `--metrics structure style_noise normal_consistency fid` and the judge.
# A finished run in WORK is reused. Quality depends on the steps, not on time: the runs share
# the cores. About two hours on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs/s2screen}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$WORK"
# The demo as it was before the study (the bundled config has since taken its results); each
# run's own overrides come after these and win.
BEFORE=(model.width=0.125 model.style_width=0 model.skip_rule=true model.struct_mode_seeking=0
  model.style_mode_seeking=0 train.phases.style=2500)

train() {  # NAME SEED OVERRIDES...: one run, then its scores in NAME-sSEED/eval.json
  local out=$WORK/$1-s$2 seed=$2
  shift 2
  if [ ! -f "$out/eval.json" ]; then
    rm -rf "$out"
    $PY -m ganstack train s2gan-rooms --out "$out" --no-eval -q train.seed="$seed" \
      train.num_threads=1 train.precision=auto train.checkpoint_every=1000 "${BEFORE[@]}" "$@" \
      >"$out.log" 2>&1
  fi
}

structure() {  # NAME OVERRIDES...: seeds 0 and 1, structure phase only
  local name=$1
  shift
  for seed in 0 1; do
    (
      train "$name" $seed train.phases.structure=3000 train.phases.fcn=1 train.phases.style=1 \
        train.phases.joint=1 "$@"
      [ -f "$WORK/$name-s$seed/eval.json" ] || $PY -m ganstack eval "$WORK/$name-s$seed" \
        --metrics structure --no-calibrate -q >>"$WORK/$name-s$seed.log" 2>&1
    ) &
  done
  wait
}

style() {  # NAME OVERRIDES...: seed 0, on the width-1/4 mode-seeking Structure-GAN
  local name=$1 out=$WORK/$1-s0
  shift
  train "$name" 0 model.struct_mode_seeking=0.2 model.width=0.25 train.phases.structure=0 \
    train.init_from="$WORK/ms02-w25-s0:phase-structure" "$@"
  [ -f "$out/eval.json" ] || $PY -m ganstack eval "$out" -q --no-calibrate \
    --metrics structure style_noise normal_consistency fid >>"$out.log" 2>&1
  [ -f "$out/judge.json" ] || $PY benchmarks/s2gan_fcn.py --run "$out" --keep "$WORK" >>"$out.log"
}

structure base
structure mbstd model.struct_minibatch_std=true
structure ms1 model.struct_mode_seeking=1
structure ms02 model.struct_mode_seeking=0.2
structure ms02-ema model.struct_mode_seeking=0.2 train.ema=0.999 train.ema_warmup=true
structure ms02-w25 model.struct_mode_seeking=0.2 model.width=0.25 model.style_width=0.125
STEPS=5000
train ms02-5k 0 train.phases.structure=$STEPS train.phases.fcn=1 train.phases.style=1 \
  train.phases.joint=1 model.struct_mode_seeking=0.2 &
train ms01-w25 0 train.phases.structure=3000 train.phases.fcn=1 train.phases.style=1 \
  train.phases.joint=1 model.struct_mode_seeking=0.1 model.width=0.25 model.style_width=0.5 &
wait
for r in ms02-5k-s0 ms01-w25-s0; do
  [ -f "$WORK/$r/eval.json" ] || $PY -m ganstack eval "$WORK/$r" --metrics structure \
    --no-calibrate -q >>"$WORK/$r.log" 2>&1
done

style stA model.style_width=0.125 &
style stB model.style_width=0.25 &
wait
style stC model.style_width=0.5 &
style stD model.style_width=0.25 model.skip_rule=false &
wait
style stE model.style_width=0.5 model.style_mode_seeking=1 &
style stF model.style_width=0.5 model.style_mode_seeking=1 model.skip_rule=false &
wait
style stG model.style_width=0.5 model.style_mode_seeking=0.2 &
style stH model.style_width=0.5 model.style_mode_seeking=0.2 model.skip_rule=false &
wait

# 3. The chosen levers end to end with the study's 2,500 Style-GAN steps, seeds 0 and 1 (the
#    demo then cut them to 1,500: benchmarks/levers.py, lever s2-wide-ms).
for seed in 0 1; do
  (
    out=$WORK/cand-s$seed
    train cand $seed model.width=0.25 model.style_width=0.5 model.struct_mode_seeking=0.2 \
      model.style_mode_seeking=0.2 model.skip_rule=false
    [ -f "$out/eval.json" ] || $PY -m ganstack eval "$out" -q --no-calibrate \
      --metrics structure style_noise normal_consistency fid >>"$out.log" 2>&1
    [ -f "$out/judge.json" ] || $PY benchmarks/s2gan_fcn.py --run "$out" --keep "$WORK" >>"$out.log"
  ) &
done
wait

$PY - "$WORK" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
for run in sorted(p for p in work.iterdir() if (p / "eval.json").is_file()):
    m = json.loads((run / "eval.json").read_text())["metrics"]
    row = {k: round(v, 3) for k, v in m.items() if "real" not in k}
    if (run / "judge.json").is_file():
        row.update(json.loads((run / "judge.json").read_text()))
    print(run.name, row)
PY
