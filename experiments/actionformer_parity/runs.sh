#!/usr/bin/env bash
# Every training behind the tables of README.md, one training per command; a run whose detections file exists is
# skipped, so the script resumes. From the root of a tal checkout:
#
#   OFFICIAL=/path/to/actionformer_release ANNOTATIONS=/path/to/thumos14.json \
#       bash experiments/actionformer_parity/runs.sh main|ablations|default
#
# PY: a Python where tal imports; PY_OFFICIAL: one where the official code's requirements import too (its NMS
# extension built); HEAVY: a prefix for each training (on the shared development machine HEAVY=/work/bin/heavy).
set -euo pipefail
what=${1:?main, ablations or default}
PY=${PY:-python}
PY_OFFICIAL=${PY_OFFICIAL:-$PY}
HEAVY=${HEAVY:-}
OUT=${OUT:-outputs/parity}
ANNOTATIONS=${ANNOTATIONS:?set ANNOTATIONS to the THUMOS14 annotation file}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
DATA=data/synthetic/$(basename "${ANNOTATIONS%.*}")-c256-seed0
$PY -m tal.data.synthetic --annotations "$ANNOTATIONS" > /dev/null  # features over the file's timing -> $DATA

tal() {  # tal <run name> <seed> [overrides...]
  local name=$1 seed=$2
  shift 2
  [ -f "$OUT/$name/detections_val.json" ] && return 0
  $HEAVY $PY -m tal.run experiment=actionformer_thumos_synthetic data.synthetic.annotations="$ANNOTATIONS" \
    seed="$seed" trainer.check_val_every_n_epoch=35 callbacks.progress_bar=null hydra.run.dir="$OUT/$name" "$@"
}
official() {  # official <seed>
  [ -f "$OUT/official_seed$1/detections_val.json" ] && return 0
  $HEAVY $PY_OFFICIAL experiments/actionformer_parity/parity.py train-official --official "${OFFICIAL:?}" \
    --data "$DATA" --seed "$1" --out "$OUT/official_seed$1"
}

case $what in
  main)  # both implementations at the budget, three seeds each
    for seed in 1 2 3; do
      official "$seed"
      tal "tal_seed$seed" "$seed"
    done
    ;;
  ablations)  # tal, seed 1, one difference back to tal's earlier way each
    tal tal_seed1_ranges_x_stride 1 'model.regress_ranges=[[0,4],[8,16],[32,64],[128,256],[512,1024],[2048,320000]]'
    tal tal_seed1_no_layerscale 1 model.network.layer_scale_init=null
    tal tal_seed1_shared_qkv_conv 1 model.network.separate_qkv_convs=false
    ;;
  default)  # the default experiment of `make run` (README figure)
    [ -f "$OUT/default/metrics.json" ] || $HEAVY $PY -m tal.run experiment=actionformer_synthetic \
      callbacks.progress_bar=null hydra.run.dir="$OUT/default"
    ;;
  *) echo "unknown: $what" >&2; exit 2 ;;
esac
