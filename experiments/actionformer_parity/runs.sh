#!/usr/bin/env bash
# Every training behind the tables of README.md, one training per command; a run whose detections file exists is
# skipped, so the script resumes. From the root of a tal checkout:
#
#   OFFICIAL=/path/to/actionformer_release ANNOTATIONS=/path/to/thumos14.json \
#       bash experiments/actionformer_parity/runs.sh main|ablations|variants|default
#
# PY: a Python where tal imports; PY_OFFICIAL: one where the official code's requirements import too (its NMS
# extension built); HEAVY: a prefix for each training (on the shared development machine HEAVY=/work/bin/heavy).
set -euo pipefail
what=${1:?main, ablations, variants or default}
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
official() {  # official <run name> <seed> [train-official options...]
  local name=$1 seed=$2
  shift 2
  [ -f "$OUT/$name/detections_val.json" ] && return 0
  $HEAVY $PY_OFFICIAL experiments/actionformer_parity/parity.py train-official --official "${OFFICIAL:?}" \
    --data "$DATA" --seed "$seed" --out "$OUT/$name" "$@"
}
tal_variant() {  # tal_variant <run name> <seed> <train-tal option>
  [ -f "$OUT/$1/detections_val.json" ] && return 0
  $HEAVY $PY experiments/actionformer_parity/parity.py train-tal --out "$OUT/$1" "$3" \
    experiment=actionformer_thumos_synthetic data.synthetic.annotations="$ANNOTATIONS" seed="$2" \
    trainer.check_val_every_n_epoch=35 callbacks.progress_bar=null
}
before() {  # before <run name> <seed> [overrides...]: tal as it was before this work (commit 270f66f)
  local name=$1 seed=$2
  shift 2
  [ -f "$OUT/$name/detections_val.json" ] && return 0
  mkdir -p "$OUT/src_270f66f"
  [ -d "$OUT/src_270f66f/src" ] || git archive 270f66f src conf | tar -x -C "$OUT/src_270f66f"
  PYTHONPATH=$OUT/src_270f66f/src $HEAVY $PY -m tal.run experiment=actionformer_thumos \
    data.annotation_file="$PWD/$DATA/annotations_gt.json" data.feature_dirs="[$PWD/$DATA/features/feats]" \
    data.max_seq_len=576 data.feat_stride=16 data.num_workers=0 data.cache_features=true \
    model.network.embed_dim=128 model.network.head_dim=128 model.postprocess.voting_iou_threshold=null \
    seed="$seed" trainer.check_val_every_n_epoch=35 callbacks.progress_bar=null hydra.run.dir="$OUT/$name" "$@"
}

case $what in
  main)  # both implementations at the budget, three seeds each
    for seed in 1 2 3; do
      official "official_seed$seed" "$seed"
      tal "tal_seed$seed" "$seed"
    done
    ;;
  ablations)  # seed 1, one difference each way
    before before_seed1 1  # tal before this work: ranges x stride, no LayerScale, shared q/k/v conv, biases
    before before_seed1_ranges_fixed 1 'model.regress_ranges=[[0,4],[2,4],[2,4],[2,4],[2,4],[2,10000]]'
    tal tal_seed1_ranges_x_stride 1 'model.regress_ranges=[[0,4],[8,16],[32,64],[128,256],[512,1024],[2048,320000]]'
    tal tal_seed1_no_layerscale 1 model.network.layer_scale_init=null
    tal tal_seed1_shared_qkv_conv 1 model.network.separate_qkv_convs=false
    official official_seed2_revive_offsets 2 --revive-offsets  # the official code with tal's fix of seed 2
    # inference only: the seed-1 weights with segment voting after per-class Soft-NMS (tal's earlier THUMOS recipe)
    [ -f "$OUT/tal_seed1_voting/detections_val.json" ] || $HEAVY $PY -m tal.run \
      experiment=actionformer_thumos_synthetic data.synthetic.annotations="$ANNOTATIONS" seed=1 train=false \
      ckpt_path="$OUT/tal_seed1/checkpoints/last.ckpt" model.postprocess.voting_iou_threshold=0.7 \
      callbacks.progress_bar=null hydra.run.dir="$OUT/tal_seed1_voting"
    ;;
  variants)  # harness variants for the differences left as they are (README: not measured yet)
    tal tal_seed1_plain_relu 1 model.network.revive_offsets=false  # the official offsets' ReLU gradient
    tal tal_seed2_plain_relu 2 model.network.revive_offsets=false
    official official_seed1_tal_padding 1 --tal-padding
    tal_variant tal_seed1_official_truncation 1 --official-truncation
    ;;
  default)  # the default experiment of `make run` and its feature views (the README's figures)
    for view in both i3d slowfast; do
      name=default views=()
      [ "$view" = both ] || { name=default_$view; views=("data.views=[$view]"); }
      [ -f "$OUT/$name/metrics.json" ] || $HEAVY $PY -m tal.run experiment=actionformer_synthetic \
        callbacks.progress_bar=null hydra.run.dir="$OUT/$name" "${views[@]}"
    done
    ;;
  *) echo "unknown: $what" >&2; exit 2 ;;
esac
