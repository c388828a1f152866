"""tal's ActionFormer side by side with the official code: part-by-part parity, and training the official code.

Run with a Python where both tal (``PYTHONPATH=src``) and the official code's requirements import, from the
tal checkout's root (see README.md beside this file)::

    python experiments/actionformer_parity/parity.py units --official CHECKOUT --data DATA_DIR
    python experiments/actionformer_parity/parity.py coverage --data DATA_DIR
    python experiments/actionformer_parity/parity.py train-official --official CHECKOUT --data DATA_DIR --seed 1 \
        --out OUT_DIR
    python experiments/actionformer_parity/parity.py score --data DATA_DIR RUN_DIR_OR_FILE ...

``DATA_DIR`` is a data set made by ``python -m tal.data.synthetic --annotations FILE`` (``annotations_gt.json``
and ``features/feats/<video>.npy``), which both implementations read.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import official  # noqa: E402

from tal.eval.detection import evaluate_detection  # noqa: E402
from tal.formats.annotations import load_annotations, load_ground_truth  # noqa: E402
from tal.formats.results import Predictions, load_results, write_results  # noqa: E402
from tal.models.actionformer import (  # noqa: E402
    DEFAULT_REGRESS_RANGES,
    ActionFormerNet,
    PositiveCountEMA,
    actionformer_loss,
    assign_targets,
    detect_video,
    make_points,
    warmup_cosine_factor,
    weight_decay_groups,
)
from tal.models.actionformer.postprocess import select_candidates  # noqa: E402
from tal.ops.timeaxis import sec_to_positions, snippet_axis  # noqa: E402

#: tal's network at the parity budget (what conf/experiment/actionformer_thumos_synthetic.yaml sets)
TAL_NET = dict(embed_dim=128, head_dim=128, num_heads=4, window_size=19, num_levels=6, path_drop=0.1)
#: tal's post-processing at the budget (conf/model/actionformer.yaml + the experiment)
TAL_POST = dict(
    score_threshold=1e-3,
    pre_nms_topk=2000,
    min_length=0.05,
    nms_method="gaussian",
    nms_sigma=0.5,
    nms_iou_threshold=0.1,
    max_segments=200,
    class_agnostic=False,
    voting_iou_threshold=None,
)
FEAT_STRIDE, SNIPPET_FRAMES = 16, 16
TRAIN_SUBSET, TEST_SUBSET = "Validation", "Test"


class Report:
    """Rows ``(part, what, value, tolerance, ok)`` printed as a markdown table; ``failed`` if any is not ok."""

    def __init__(self):
        self.rows: list[tuple[str, str, str, str, bool]] = []

    def check(self, part: str, what: str, diff: float, tol: float) -> bool:
        ok = bool(diff <= tol)
        self.rows.append((part, what, f"{diff:.3g}", f"<= {tol:g}", ok))
        return ok

    def note(self, part: str, what: str, value) -> None:
        self.rows.append((part, what, str(value), "", True))

    @property
    def failed(self) -> bool:
        return not all(r[-1] for r in self.rows)

    def table(self) -> str:
        lines = ["| part | what | value | tolerance | |", "|---|---|---|---|---|"]
        lines += [f"| {p} | {w} | {v} | {t} | {'ok' if ok else 'FAIL'} |" for p, w, v, t, ok in self.rows]
        return "\n".join(lines)


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    if a.shape != b.shape:
        return math.inf
    return float((a - b).abs().max()) if a.numel() else 0.0


def level_lengths(T: int, num_levels: int = 6) -> list[int]:
    """Level lengths of a sequence padded to a multiple of ``2 ** (num_levels - 1)``."""
    T = math.ceil(T / 2 ** (num_levels - 1)) * 2 ** (num_levels - 1)
    return [T // 2**l for l in range(num_levels)]


# ------------------------------------------------------------------------------------------------ data
def official_items(off, cfg: dict, subset_training: bool) -> dict[str, dict]:
    """Whole-video items of the official dataset (no random truncation): ``{video_id: item}``; the train split
    when ``subset_training``, else the validation split (THUMOS14: Validation / Test)."""
    cfg = copy.deepcopy(cfg)
    if not subset_training:
        return {it["video_id"]: it for it in official.dataset(off, cfg, training=False)}
    cfg["val_split"] = cfg["train_split"]
    return {it["video_id"]: it for it in official.dataset(off, cfg, training=False)}


def tal_positions(ann, video_id: str) -> np.ndarray:
    """Segments of ``video_id`` in feature positions, as tal's native dataset converts them (no cleaning)."""
    v = ann[video_id]
    sec_per_unit, offset_sec = snippet_axis(v.fps, FEAT_STRIDE, SNIPPET_FRAMES)
    return sec_to_positions(v.segments_sec, sec_per_unit, offset_sec)


# ------------------------------------------------------------------------------------------------ parts
def check_points(off, cfg, rep: Report) -> None:
    model = official.build_model(off, cfg)
    lengths = level_lengths(cfg["dataset"]["max_seq_len"])
    feats = [torch.zeros(1, 1, t) for t in lengths]
    theirs = torch.cat(model.point_generator(feats))
    ours = make_points(lengths, [2**l for l in range(6)], DEFAULT_REGRESS_RANGES)
    rep.check("points", f"[pos, lo, hi, stride] of {len(ours)} points (T=576)", max_abs(ours, theirs), 0.0)


def check_targets(off, cfg, items: dict, ann, rep: Report) -> None:
    """Label assignment and regression targets of every training video, whole, on the real timing."""
    model = official.build_model(off, cfg)
    model.point_generator = off.modeling.make_generator(
        "point", max_seq_len=4 * 3456, fpn_strides=model.fpn_strides, regression_range=model.reg_range
    )
    worst_cls = worst_reg = worst_pos = 0.0
    n_points = n_pos = 0
    for vid, it in items.items():
        T = it["feats"].shape[1]
        lengths = level_lengths(T)
        points_l = model.point_generator([torch.zeros(1, 1, t) for t in lengths])
        segs = it["segments"].float()
        labels = it["labels"].long()
        (cls_o,), (reg_o,) = model.label_points(points_l, [segs], [labels])
        points = make_points(lengths, model.fpn_strides, DEFAULT_REGRESS_RANGES)
        cls_t, reg_t = assign_targets(points, segs, labels, cfg["dataset"]["num_classes"], 1.5)
        worst_cls = max(worst_cls, max_abs(cls_t, cls_o))
        # the official targets hold the (unused) distances of negative points too; tal zeroes them
        pos = cls_o.sum(-1) > 0
        worst_reg = max(worst_reg, max_abs(reg_t[pos], reg_o[pos]))
        n_points += len(points)
        n_pos += int(pos.sum())
        # segment positions: tal's conversion of the same file (float64; the official one is float32)
        ours = torch.as_tensor(tal_positions(ann, vid))
        worst_pos = max(worst_pos, max_abs(ours, segs) if len(ours) == len(segs) else math.inf)
    what = f"{len(items)} training videos, {n_points} points, {n_pos} positive"
    rep.check("targets", f"class targets (multi-hot), {what}", worst_cls, 0.0)
    rep.check("targets", "regression targets of positive points (stride units)", worst_reg, 1e-4)
    rep.check("targets", "segment positions: tal.ops.timeaxis vs the official dataset", worst_pos, 1e-3)


def scramble_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Move every parameter of an official model away from its initial value (LayerNorm weights and biases,
    LayerScale and level scales around 1, conv biases around 0), so a comparison exercises all of them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            kind = type(m).__name__
            for name, p in m.named_parameters(recurse=False):
                r = torch.randn(p.shape, generator=g)
                if kind in ("LayerNorm", "AffineDropPath", "Scale") and name != "bias":
                    p.copy_(1.0 + 0.2 * r)
                elif name == "bias":
                    p.copy_(0.1 * r)
    return module


def official_outputs(model, feats: torch.Tensor, mask: torch.Tensor):
    """Per level ``cls (B, T_l, K), offsets (B, T_l, 2), masks (B, T_l)`` of the official network (eval)."""
    feats_l, masks_l = model.backbone(feats, mask[:, None])
    fpn_feats, fpn_masks = model.neck(feats_l, masks_l)
    cls = [x.permute(0, 2, 1) for x in model.cls_head(fpn_feats, fpn_masks)]
    off = [x.permute(0, 2, 1) for x in model.reg_head(fpn_feats, fpn_masks)]
    return cls, off, [m.squeeze(1) for m in fpn_masks]


def tal_net_from(model, official_state: dict | None = None) -> ActionFormerNet:
    net = ActionFormerNet(model.backbone.n_in, model.num_classes, **TAL_NET)
    net.load_state_dict(official.to_tal_state_dict(official_state or model.state_dict(), net))
    return net.eval()


def check_forward(off, cfg, items: dict, rep: Report, weights: dict | None) -> None:
    """Official weights (scrambled, or a trained EMA) mapped onto tal's modules: equal outputs."""
    torch.manual_seed(0)
    model = official.build_model(off, cfg)
    if weights is not None:
        model.load_state_dict(weights)
    else:
        scramble_(model)
    model.eval()
    net = tal_net_from(model)
    what = "trained weights" if weights is not None else "scrambled weights"
    # (a) full-length input, no padding: outputs must be equal everywhere
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(2, model.backbone.n_in, 576, generator=g)
    mask = torch.ones(2, 576, dtype=torch.bool)
    with torch.no_grad():
        co, oo, _ = official_outputs(model, feats, mask)
        ct, ot, _ = net(feats, mask)
    rep.check("forward", f"cls logits, 2 x 576 unpadded, {what}", max(map(max_abs, co, ct)), 1e-4)
    rep.check("forward", f"offsets, 2 x 576 unpadded, {what}", max(map(max_abs, oo, ot)), 1e-4)
    # (b) real videos padded as the official inference pads them (to 576): equal away from the padding
    interior = boundary = 0.0
    padded_cases = []
    margin = 32  # positions from the last valid one that the official padding reaches (see README), any level
    for it in list(items.values())[:24]:
        x = it["feats"]
        T = x.shape[1]
        if T > 576 - 32:
            continue
        feats = torch.zeros(1, x.shape[0], 576)
        feats[0, :, :T] = x
        mask = torch.zeros(1, 576, dtype=torch.bool)
        mask[0, :T] = True
        with torch.no_grad():
            co, _, mo = official_outputs(model, feats, mask)
            ct, _, _ = net(x[None], torch.ones(1, T, dtype=torch.bool))
        padded_cases.append((feats, mask, ct))
        for l, (a, b) in enumerate(zip(co, ct)):
            n = int(mo[l][0].sum())
            inner = max(0, n - margin)
            interior = max(interior, max_abs(a[0, :inner], b[0, :inner]))
            boundary = max(boundary, max_abs(a[0, inner:n], b[0, inner:n]))
    rep.check("forward", f"cls logits of padded videos, away from the padding, {what}", interior, 1e-4)
    rep.note(
        "forward",
        f"cls logits near the padding (official reads padded LayerNorm biases), {what}",
        f"{boundary:.3g}",
    )
    # the harness's variant of the official network that reads padding as tal does: equal there too
    undo = official.use_tal_padding(off, model)
    worst = 0.0
    for x, mask, ct in padded_cases:
        with torch.no_grad():
            co, _, mo = official_outputs(model, x, mask)
        worst = max(
            worst,
            max(max_abs(a[0, : int(m[0].sum())], b[0, : int(m[0].sum())]) for a, b, m in zip(co, ct, mo)),
        )
    undo()
    rep.check(
        "forward", f"cls logits of padded videos, official with tal's padding (variant), {what}", worst, 1e-4
    )


def check_losses(off, cfg, items: dict, rep: Report) -> None:
    """Same network outputs and targets, several successive batches (the normaliser is a moving average)."""
    torch.manual_seed(0)
    model = scramble_(official.build_model(off, cfg)).eval()
    model.loss_normalizer = cfg["train_cfg"]["init_loss_norm"]
    normalizer = PositiveCountEMA(cfg["train_cfg"]["init_loss_norm"], 0.9)
    videos = [it for it in items.values() if it["feats"].shape[1] <= 576][:12]
    worst = {"cls_loss": 0.0, "reg_loss": 0.0, "final_loss": 0.0, "grad": 0.0}
    for b in range(0, len(videos), 2):
        batch = videos[b : b + 2]
        feats = torch.zeros(len(batch), batch[0]["feats"].shape[0], 576)
        mask = torch.zeros(len(batch), 576, dtype=torch.bool)
        for i, it in enumerate(batch):
            feats[i, :, : it["feats"].shape[1]] = it["feats"]
            mask[i, : it["feats"].shape[1]] = True
        with torch.no_grad():
            cls, offs, masks = official_outputs(model, feats, mask)
        cls = [c.clone().requires_grad_() for c in cls]
        offs = [o.clone().requires_grad_() for o in offs]
        points_l = model.point_generator([c.transpose(1, 2) for c in cls])
        segs, labels = [it["segments"].float() for it in batch], [it["labels"].long() for it in batch]
        gt_cls, gt_off = model.label_points(points_l, segs, labels)
        theirs = model.losses(masks, cls, offs, gt_cls, gt_off)
        g_theirs = torch.autograd.grad(theirs["final_loss"], cls + offs)
        points = torch.cat(points_l)
        targets = [assign_targets(points, s, lab, model.num_classes, 1.5) for s, lab in zip(segs, labels)]
        cls_t, reg_t = (torch.stack(t) for t in zip(*targets))
        valid = torch.cat(masks, dim=1)
        num_pos = (valid & (cls_t.sum(-1) > 0)).sum()
        ours = actionformer_loss(
            torch.cat(cls, 1), torch.cat(offs, 1), valid, cls_t, reg_t, normalizer.update(num_pos)
        )
        g_ours = torch.autograd.grad(ours["loss"], cls + offs)
        for key, tal_key in (("cls_loss", "cls_loss"), ("reg_loss", "reg_loss"), ("final_loss", "loss")):
            diff = abs(float(theirs[key]) - float(ours[tal_key])) / max(1e-12, abs(float(theirs[key])))
            worst[key] = max(worst[key], diff)
        worst["grad"] = max(worst["grad"], max(map(max_abs, g_theirs, g_ours)))
    n = math.ceil(len(videos) / 2)
    rep.check("losses", f"focal loss, {n} successive batches (relative)", worst["cls_loss"], 1e-5)
    rep.check("losses", "DIoU loss (relative)", worst["reg_loss"], 1e-5)
    rep.check("losses", "total loss (relative)", worst["final_loss"], 1e-5)
    rep.check("losses", "gradient w.r.t. every network output", worst["grad"], 1e-6)


def ranked(segs: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor):
    """Rows sorted by score descending, ties by label, start, end (a canonical order for comparing)."""
    keys = np.lexsort((segs[:, 1].numpy(), segs[:, 0].numpy(), labels.numpy(), -scores.double().numpy()))
    idx = torch.as_tensor(keys)
    return segs[idx].double(), scores[idx].double(), labels[idx]


def check_postprocess(off, cfg, items: dict, rep: Report, weights: dict | None, max_videos: int) -> None:
    """Same network outputs -> the official ``inference_single_video`` + ``postprocessing`` vs tal's
    ``detect_video``."""
    torch.manual_seed(0)
    model = official.build_model(off, cfg)
    if weights is not None:
        model.load_state_dict(weights)
    else:
        scramble_(model)
    model.eval()
    worst = {"candidates": 0.0, "segments": 0.0, "scores": 0.0, "labels": 0, "count": 0}
    n_dets = n_empty = n_cands = 0
    videos = list(items.values())[:max_videos]
    for it in videos:
        T = it["feats"].shape[1]
        padded = max(576, math.ceil(T / 576) * 576)  # as the official preprocessing pads one video
        feats = torch.zeros(1, it["feats"].shape[0], padded)
        feats[0, :, :T] = it["feats"]
        mask = torch.zeros(1, padded, dtype=torch.bool)
        mask[0, :T] = True
        with torch.no_grad():
            cls, offs, masks = official_outputs(model, feats, mask)
        cls, offs, masks = [c[0] for c in cls], [o[0] for o in offs], [m[0] for m in masks]
        points_l = model.point_generator([c.T[None] for c in cls])
        cand = model.inference_single_video(points_l, masks, cls, offs)
        meta = {k: it[k] for k in ("video_id", "fps", "duration", "feat_stride", "feat_num_frames")}
        (theirs,) = model.postprocessing([{**cand, **meta}])
        sec_per_unit, offset_sec = snippet_axis(it["fps"], it["feat_stride"], it["feat_num_frames"])
        segs, scores, labels = detect_video(
            cls, offs, list(points_l), masks, sec_per_unit, offset_sec, it["duration"], **TAL_POST
        )
        # candidates before NMS, as sets (official: sorted per level by score; tal: top-k per level)
        mine = [select_candidates(c, o, p, m, 1e-3, 2000) for c, o, p, m in zip(cls, offs, points_l, masks)]
        m_segs, m_scores, m_labels = (torch.cat(x) for x in zip(*mine))
        long_enough = m_segs[:, 1] - m_segs[:, 0] > 0.05
        a = ranked(m_segs[long_enough], m_scores[long_enough], m_labels[long_enough])
        b = ranked(cand["segments"], cand["scores"], cand["labels"])
        same = len(a[1]) == len(b[1])
        worst["candidates"] = max(worst["candidates"], max(map(max_abs, a, b)) if same else math.inf)
        n_cands += len(b[1])
        # final segments: the official keeps the ones that clipping to [0, duration] made empty; tal drops them
        keep = theirs["segments"][:, 1] > theirs["segments"][:, 0]
        n_empty += int((~keep).sum())
        t = ranked(theirs["segments"][keep], theirs["scores"][keep], theirs["labels"][keep])
        o = ranked(segs, scores, labels)
        worst["count"] = max(worst["count"], abs(len(t[1]) - len(o[1])))
        if len(t[1]) == len(o[1]):
            worst["segments"] = max(worst["segments"], max_abs(o[0], t[0]))
            worst["scores"] = max(worst["scores"], max_abs(o[1], t[1]))
            worst["labels"] = max(worst["labels"], int((o[2] != t[2]).sum()))
        n_dets += len(o[1])
    what = "trained weights" if weights is not None else "scrambled weights"
    rep.check(
        "post-processing",
        f"candidates before NMS ({n_cands}, {len(videos)} test videos, {what})",
        worst["candidates"],
        1e-5,
    )
    rep.check("post-processing", f"final segments per video (count; {n_dets} in all)", worst["count"], 0)
    rep.check("post-processing", "final segments in seconds", worst["segments"], 1e-4)
    rep.check("post-processing", "final scores after Soft-NMS", worst["scores"], 1e-5)
    rep.check("post-processing", "final labels (mismatches)", worst["labels"], 0)
    rep.note(
        "post-processing", "official segments made empty by clipping to the video (tal drops them)", n_empty
    )


def check_end_to_end(off, cfg, items: dict, rep: Report, weights: dict, gt_file: Path) -> None:
    """Trained official weights on every test video: the official inference (its forward on the input padded to
    576, its post-processing) and tal's (tal's forward on the unpadded input, ``detect_video``), both scored
    with the same ``tal.eval`` call."""
    model = official.build_model(off, cfg)
    model.load_state_dict(weights)
    model.eval()
    net = tal_net_from(model)
    rows = {"official": [], "tal": []}
    for it in items.values():
        with torch.no_grad():
            (theirs,) = model(
                [it]
            )  # the official eval path: preprocessing, network, inference, postprocessing
            x = it["feats"][None]
            cls, offs, masks = net(x, torch.ones(1, x.shape[-1], dtype=torch.bool))
        points = make_points([c.shape[1] for c in cls], net.strides, DEFAULT_REGRESS_RANGES)
        sec_per_unit, offset_sec = snippet_axis(it["fps"], it["feat_stride"], it["feat_num_frames"])
        ours = detect_video(
            [c[0] for c in cls],
            [o[0] for o in offs],
            list(points.split([c.shape[1] for c in cls])),
            [m[0] for m in masks],
            sec_per_unit,
            offset_sec,
            it["duration"],
            **TAL_POST,
        )
        rows["official"].append((it["video_id"], theirs["segments"], theirs["scores"], theirs["labels"]))
        rows["tal"].append((it["video_id"], *ours))
    gt = load_ground_truth(gt_file, subset=TEST_SUBSET)
    label_names = load_annotations(gt_file).label_names
    maps = {}
    for side, rs in rows.items():
        ids = [r[0] for r in rs]
        preds = Predictions(
            video_ids=ids,
            video_idx=np.concatenate([np.full(len(r[2]), i) for i, r in enumerate(rs)]),
            segments_sec=torch.cat([r[1].double() for r in rs]).numpy(),
            scores=torch.cat([r[2].double() for r in rs]).numpy(),
            label_idx=torch.cat([r[3] for r in rs]).numpy(),
            label_names=label_names,
        )
        maps[side] = evaluate_detection(gt, preds, "thumos").average_map
        rep.note(
            "end to end",
            f"average mAP, {side} inference of the trained official weights",
            f"{100 * maps[side]:.2f}",
        )
    rep.check(
        "end to end", "|difference| in average mAP points", 100 * abs(maps["official"] - maps["tal"]), 0.1
    )


def check_init(off, cfg, items: dict, rep: Report, seeds=(1, 2, 3)) -> None:
    """The same seed gives the same initial weights; and which initial offset channels are dead (ReLU output 0 at
    every positive point of the first training videos: that channel gets no gradient from a plain ReLU)."""
    from pytorch_lightning import seed_everything

    videos = [it for it in items.values()][:20]
    for seed in seeds:
        off.utils.fix_random_seed(seed, include_cuda=False)
        model = official.build_model(off, cfg)
        seed_everything(seed, verbose=False)
        net = ActionFormerNet(model.backbone.n_in, model.num_classes, **TAL_NET).eval()
        mapped = official.to_tal_state_dict(model.state_dict(), net)
        diff = max(max_abs(mapped[k], v) for k, v in net.state_dict().items())
        rep.check("init", f"initial weights, seed {seed}: official (mapped) vs tal", diff, 0.0)
        alive = torch.zeros(2)
        n_pos = 0
        for it in videos:
            x = it["feats"][None]
            with torch.no_grad():
                cls, offs, masks = net(x, torch.ones(1, x.shape[-1], dtype=torch.bool))
            points = make_points([c.shape[1] for c in cls], net.strides, DEFAULT_REGRESS_RANGES)
            targets, _ = assign_targets(
                points, it["segments"].float(), it["labels"].long(), model.num_classes
            )
            pos = (targets.sum(-1) > 0) & torch.cat([m[0] for m in masks])
            alive += (torch.cat(offs, 1)[0][pos] > 0).sum(0)
            n_pos += int(pos.sum())
        rep.note(
            "init",
            f"seed {seed}: positive points of 20 training videos with a left / right offset > 0",
            f"{int(alive[0])} / {int(alive[1])} of {n_pos}",
        )


def check_optimizer(off, cfg, rep: Report) -> None:
    """AdamW parameter groups (weight decay or not) and the learning rate of every step of the budget."""
    model = official.build_model(off, cfg)
    net = tal_net_from(model)
    names = {id(p): n for n, p in model.named_parameters()}
    mapped = official.key_map(model.state_dict(), net)
    theirs = [
        {mapped[names[id(p)]] for p in g["params"]}
        for g in off.utils.make_optimizer(model, cfg["opt"]).param_groups
    ]
    tal_names = {id(p): n for n, p in net.named_parameters()}
    ours = [
        {tal_names[id(p)] for p in g["params"]} for g in weight_decay_groups(net, cfg["opt"]["weight_decay"])
    ]
    rep.check(
        "optimizer",
        f"AdamW groups: parameters decayed differently (of {len(tal_names)})",
        len(theirs[0] ^ ours[0]) + len(theirs[1] ^ ours[1]),
        0,
    )
    steps_per_epoch = 100  # 200 training videos, batch 2
    opt = off.utils.make_optimizer(model, cfg["opt"])
    sched = off.utils.make_scheduler(opt, cfg["opt"], steps_per_epoch)
    base = cfg["opt"]["learning_rate"]
    warmup = cfg["opt"]["warmup_epochs"] * steps_per_epoch
    total = (cfg["opt"]["epochs"] + cfg["opt"]["warmup_epochs"]) * steps_per_epoch
    worst = 0.0
    for step in range(total):
        ours_lr = base * warmup_cosine_factor(step, warmup, total)
        worst = max(worst, abs(opt.param_groups[0]["lr"] - ours_lr) / base)
        opt.step()
        sched.step()
    rep.check(
        "optimizer", f"learning rate of each of the {total} steps, |difference| / base lr", worst, 2.5e-3
    )


def cmd_units(args) -> int:
    off = official.load(args.official)
    cfg = official.config(off, args.data)
    ann = load_annotations(Path(args.data) / "annotations_gt.json")
    weights = None
    if args.weights:
        weights = torch.load(args.weights, map_location="cpu", weights_only=True)
    rep = Report()
    t0 = time.perf_counter()
    train_items = official_items(off, cfg, subset_training=True)
    test_items = official_items(off, cfg, subset_training=False)
    parts = [
        ("points", check_points, (off, cfg, rep)),
        ("targets", check_targets, (off, cfg, train_items, ann, rep)),
        ("losses", check_losses, (off, cfg, train_items, rep)),
        ("optimizer", check_optimizer, (off, cfg, rep)),
        ("init", check_init, (off, cfg, train_items, rep)),
        ("post-processing", check_postprocess, (off, cfg, test_items, rep, None, args.max_videos)),
        ("forward", check_forward, (off, cfg, test_items, rep, None)),
    ]
    if weights is not None:
        parts.append(
            ("post-processing", check_postprocess, (off, cfg, test_items, rep, weights, args.max_videos))
        )
        parts.append(("forward", check_forward, (off, cfg, test_items, rep, weights)))
        gt_file = Path(args.data) / "annotations_gt.json"
        parts.append(("end to end", check_end_to_end, (off, cfg, test_items, rep, weights, gt_file)))
    for part, check, check_args in parts:
        try:
            check(*check_args)
        except Exception as e:  # a part that cannot even run (e.g. modules that do not map) is a failed part
            rep.rows.append((part, f"error: {type(e).__name__}: {e}", "", "", False))
    print(rep.table())
    print(
        f"\n{len(rep.rows)} checks in {time.perf_counter() - t0:.0f} s; {'FAILED' if rep.failed else 'all equal'}"
    )
    return 1 if rep.failed else 0


# ------------------------------------------------------------------------------------------------ coverage
def cmd_coverage(args) -> int:
    """Share of the training instances (whole videos, stride 16) with at least one positive point."""
    ann = load_annotations(Path(args.data) / "annotations_gt.json").subset(args.subset)
    strides = [2**l for l in range(6)]
    old_units = [(lo * s, hi * s) for (lo, hi), s in zip(DEFAULT_REGRESS_RANGES, strides)]
    variants = {
        "ranges in input positions (now)": DEFAULT_REGRESS_RANGES,
        "ranges x stride (before)": old_units,
    }
    manifest = json.loads((Path(args.data) / "features" / "feats" / "manifest.json").read_text())
    for name, ranges in variants.items():
        covered = total = 0
        for v in ann:
            if not v.num_instances:
                continue
            T = int(manifest["videos"][v.video_id]["T"])
            lengths = level_lengths(T)
            points = make_points(lengths, strides, ranges)
            valid = torch.cat([(torch.arange(t) * s < T) for t, s in zip(lengths, strides)])
            segs = torch.as_tensor(tal_positions(ann, v.video_id), dtype=torch.float32)
            n = len(segs)  # one class per instance: the class targets then say which instances own a point
            cls, _ = assign_targets(points, segs, torch.arange(n), n, 1.5)
            covered += int((cls[valid] > 0).any(0).sum())
            total += n
        print(f"{name}: {covered} / {total} instances ({100 * covered / total:.2f}%) have a positive point")
    return 0


# ------------------------------------------------------------------------------------------------ training
def cmd_train_official(args) -> int:
    off = official.load(args.official)
    overrides = {}
    if args.epochs is not None:
        overrides["opt.epochs"] = args.epochs
    if args.warmup_epochs is not None:
        overrides["opt.warmup_epochs"] = args.warmup_epochs
    cfg = official.config(off, args.data, seed=args.seed, **overrides)
    if args.revive_offsets:
        official.use_revived_offsets(off)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, model_ema, label_names = official.train(off, cfg, tal_padding=args.tal_padding)
    train_sec = time.perf_counter() - t0
    torch.save(model_ema.module.state_dict(), out / "official_ema.pt")
    res = official.predict(off, cfg, model_ema.module)
    video_ids = sorted(set(res["video-id"]))
    index = {v: i for i, v in enumerate(video_ids)}
    preds = Predictions(
        video_ids=video_ids,
        video_idx=np.array([index[v] for v in res["video-id"]], dtype=np.int64),
        segments_sec=np.stack([res["t-start"], res["t-end"]], axis=1).astype(np.float64),
        scores=np.asarray(res["score"], dtype=np.float64),
        label_idx=np.asarray(res["label"], dtype=np.int64),
        label_names=label_names,
    )
    write_results(out / "detections_val.json", preds, version="actionformer_release")
    (out / "run.json").write_text(
        json.dumps(
            {"seed": args.seed, "train_sec": round(train_sec, 1), "config": cfg}, indent=1, default=str
        )
    )
    print(f"wrote {out / 'detections_val.json'} ({len(preds)} detections); training took {train_sec:.0f} s")
    return 0


def use_official_truncation() -> None:
    """A harness variant, not tal's behaviour: tal's training crops truncated as the official ``truncate_feats``
    does, to measure what that difference costs. Officially a segment is kept when at least half of it lies in
    the window widened by the snippet half-offset (0.5 positions here) on both sides, and clipped to that widened
    window; and up to 200 windows are drawn to find one holding an instance (tal: the window itself, 10 draws).
    Patches :mod:`tal.data.datasets` for this process."""
    from tal.data import datasets

    truncate = datasets.truncate_segments
    half = 0.5 * SNIPPET_FRAMES / FEAT_STRIDE

    def widened(segments, start, end, min_inside=0.5):
        return truncate(segments, start - half, end + half, min_inside)

    random_window = datasets.FeatureDataset._random_window

    def more_draws(self, lo, hi, segs_idx, tries=200):
        return random_window(self, lo, hi, segs_idx, tries)

    datasets.truncate_segments = widened
    datasets.FeatureDataset._random_window = more_draws


def cmd_train_tal(args) -> int:
    """``tal.run`` with its overrides, under a harness variant (``--official-truncation``)."""
    from tal.run import compose, train

    if args.official_truncation:
        use_official_truncation()
    result = train(compose([*args.overrides, f"paths.output_dir={Path(args.out).resolve()}"]))
    print(f"val/mAP {result.metrics.get('val/mAP')}; outputs in {result.output_dir}")
    return 0


# ------------------------------------------------------------------------------------------------ scoring
def detections_file(path: Path) -> Path:
    return path / "detections_val.json" if path.is_dir() else path


def cmd_score(args) -> int:
    """Score every results file with the same call of ``tal.eval`` (official protocol, tIoU 0.3:0.1:0.7)."""
    gt = load_ground_truth(Path(args.data) / "annotations_gt.json", subset=args.subset)
    print("| run | mAP@0.3 | mAP@0.4 | mAP@0.5 | mAP@0.6 | mAP@0.7 | average mAP |")
    print("|---|---|---|---|---|---|---|")
    out = {}
    for run in args.runs:
        path = detections_file(Path(run))
        res = evaluate_detection(gt, load_results(path), "thumos")
        per = res.map_per_threshold
        out[str(path)] = {"average_mAP": res.average_map, "mAP": per.tolist()}
        cells = " | ".join(f"{100 * m:.1f}" for m in per)
        print(f"| {run} | {cells} | **{100 * res.average_map:.1f}** |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("units", help="part-by-part parity with the official functions")
    p.add_argument("--official", required=True, help="checkout of actionformer_release")
    p.add_argument("--data", required=True, help="data set folder (tal.data.synthetic --annotations)")
    p.add_argument("--weights", help="official state dict (train-official's official_ema.pt) to also compare")
    p.add_argument("--max-videos", type=int, default=40, help="test videos of the post-processing check")
    p.set_defaults(func=cmd_units)
    p = sub.add_parser("coverage", help="training instances with at least one positive point")
    p.add_argument("--data", required=True)
    p.add_argument("--subset", default=TRAIN_SUBSET)
    p.set_defaults(func=cmd_coverage)
    p = sub.add_parser("train-official", help="train and run the official code at the parity budget (CPU)")
    p.add_argument("--official", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, help="epochs after warm-up (budget: 30)")
    p.add_argument("--warmup-epochs", type=int, help="warm-up epochs (budget: 5)")
    p.add_argument(
        "--tal-padding", action="store_true", help="variant: the official network reads padding as tal does"
    )
    p.add_argument(
        "--revive-offsets",
        action="store_true",
        help="variant: the offsets' ReLU passes its gradient below zero",
    )
    p.set_defaults(func=cmd_train_official)
    p = sub.add_parser("train-tal", help="train tal (tal.run overrides) under a harness variant")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument(
        "--official-truncation",
        action="store_true",
        help="variant: crops truncated as the official code does",
    )
    p.add_argument("overrides", nargs="*", help="tal.run overrides, e.g. experiment=... seed=1")
    p.set_defaults(func=cmd_train_tal)
    p = sub.add_parser("score", help="score results files / run folders with tal.eval (tIoU 0.3:0.1:0.7)")
    p.add_argument("--data", required=True)
    p.add_argument("--subset", default=TEST_SUBSET)
    p.add_argument("--json", help="also write the numbers here")
    p.add_argument("runs", nargs="+", help="run folders (their detections_val.json) or results files")
    p.set_defaults(func=cmd_score)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
