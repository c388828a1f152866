"""Slow loop-for-loop references the vectorised code is tested (and benchmarked) against.

* Detection AP / proposal AR: transcriptions of the official ActivityNet ``Evaluation`` code
  (``segment_iou``, ``interpolated_prec_rec``, ``compute_average_precision_detection``,
  ``average_recall_vs_avg_nr_proposals``) on plain lists, without pandas. Rankings use
  ``np.argsort(x, kind="stable")[::-1]``: the official ``argsort()[::-1]`` for tie groups of up to 16 (numpy
  sorts those stably), i.e. equal scores / equal tIoU: the later item first, NaN tIoU first. tIoU is unguarded
  (NaN for a zero union) unless ``strict`` (0 for a non-positive union). ``actionformer_filter`` transcribes
  ActionFormer's ``remove_duplicate_annotations``.
* Soft-NMS / NMS: transcriptions of ActionFormer's C++ ``nms_cpu`` loops (including the in-place swaps), per
  class, followed by the global sort and cut of its ``batched_nms`` -- without the ``+ 1e-6`` added to lengths.
"""

from __future__ import annotations

import math

import numpy as np


# ----------------------------------------------------------------------------------------------- detection
def segment_iou(target_segment, candidate_segments, strict=False):
    """tIoU of one ``[s, e]`` against ``(n, 2)`` candidates, as the official code (NaN for a zero union);
    ``strict``: 0 for a non-positive union."""
    candidate_segments = np.asarray(candidate_segments, dtype=np.float64).reshape(-1, 2)
    tt1 = np.maximum(target_segment[0], candidate_segments[:, 0])
    tt2 = np.minimum(target_segment[1], candidate_segments[:, 1])
    segments_intersection = (tt2 - tt1).clip(0)
    segments_union = (
        (candidate_segments[:, 1] - candidate_segments[:, 0])
        + (target_segment[1] - target_segment[0])
        - segments_intersection
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        tiou = segments_intersection.astype(float) / segments_union
    if strict:
        tiou = np.where(segments_union > 0, tiou, 0.0)
    return tiou


def official_argsort_desc(values):
    """``values.argsort()[::-1]`` with numpy's stable order on ties (what it does for up to 16 equal values)."""
    return np.argsort(np.asarray(values, dtype=np.float64), kind="stable")[::-1]


def actionformer_filter(gt_rows, tol=1e-3):
    """ActionFormer's ``remove_duplicate_annotations`` per video on ``(video, label, s, e)`` rows: drop rows
    shorter than ``tol`` and same-label rows within ``tol`` (start and end) of an earlier kept row."""
    kept = []
    for video, label, s, e in gt_rows:
        valid = (e - s) >= tol
        for v2, l2, s2, e2 in kept:
            if v2 == video and abs(s - s2) <= tol and abs(e - e2) <= tol and l2 == label:
                valid = False
                break
        if valid:
            kept.append((video, label, s, e))
    return kept


def interpolated_prec_rec(prec, rec):
    """VOC-2011 interpolated AP, as the official code."""
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    ap = np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])
    return ap


def compute_average_precision_detection(ground_truth, prediction, tiou_thresholds, strict=False):
    """AP of one class. ``ground_truth``: list of ``(video, t_start, t_end)``; ``prediction``: list of
    ``(video, t_start, t_end, score)`` in input order. Returns ``(T,)``."""
    tiou_thresholds = np.asarray(tiou_thresholds)
    ap = np.zeros(len(tiou_thresholds))
    if len(prediction) == 0:
        return ap
    npos = float(len(ground_truth))
    lock_gt = np.ones((len(tiou_thresholds), len(ground_truth))) * -1
    scores = np.array([p[3] for p in prediction], dtype=np.float64)
    sort_idx = official_argsort_desc(scores)
    prediction = [prediction[i] for i in sort_idx]
    tp = np.zeros((len(tiou_thresholds), len(prediction)))
    fp = np.zeros((len(tiou_thresholds), len(prediction)))

    gt_by_video = {}
    for index, (video, s, e) in enumerate(ground_truth):
        gt_by_video.setdefault(video, []).append((index, s, e))

    for idx, (video, s, e, _score) in enumerate(prediction):
        if video not in gt_by_video:
            fp[:, idx] = 1
            continue
        this_gt = gt_by_video[video]
        tiou_arr = segment_iou(np.array([s, e]), np.array([[gs, ge] for _, gs, ge in this_gt]), strict)
        tiou_sorted_idx = official_argsort_desc(tiou_arr)
        for tidx, tiou_thr in enumerate(tiou_thresholds):
            for jdx in tiou_sorted_idx:
                if tiou_arr[jdx] < tiou_thr:
                    fp[tidx, idx] = 1
                    break
                if lock_gt[tidx, this_gt[jdx][0]] >= 0:
                    continue
                tp[tidx, idx] = 1
                lock_gt[tidx, this_gt[jdx][0]] = idx
                break
            if fp[tidx, idx] == 0 and tp[tidx, idx] == 0:
                fp[tidx, idx] = 1

    tp_cumsum = np.cumsum(tp, axis=1).astype(float)
    fp_cumsum = np.cumsum(fp, axis=1).astype(float)
    recall_cumsum = tp_cumsum / npos
    precision_cumsum = tp_cumsum / (tp_cumsum + fp_cumsum)
    for tidx in range(len(tiou_thresholds)):
        ap[tidx] = interpolated_prec_rec(precision_cumsum[tidx, :], recall_cumsum[tidx, :])
    return ap


def detection_ap_reference(gt_rows, pred_rows, tiou_thresholds, strict=False):
    """Per-class AP like ``ANETdetection.wrapper_compute_average_precision``.

    Args:
        gt_rows: list of ``(video, label, t_start, t_end)``.
        pred_rows: list of ``(video, label, t_start, t_end, score)`` (labels unknown to the ground truth are
            skipped instead of raising ``KeyError``).

    Returns:
        ``{label: ap (T,)}`` over the labels present in ``gt_rows``.
    """
    labels = sorted({row[1] for row in gt_rows})
    out = {}
    for label in labels:
        gt = [(v, s, e) for v, lab, s, e in gt_rows if lab == label]
        pred = [(v, s, e, p) for v, lab, s, e, p in pred_rows if lab == label]
        out[label] = compute_average_precision_detection(gt, pred, tiou_thresholds, strict)
    return out


# ----------------------------------------------------------------------------------------------- proposals
def average_recall_vs_avg_nr_proposals(
    gt_rows, proposal_rows, max_avg_nr_proposals, tiou_thresholds, strict=False
):
    """Official AR-AN. ``gt_rows``: ``(video, t_start, t_end)``; ``proposal_rows``: ``(video, s, e, score)``.

    Returns ``recall (T, 100)``, ``avg_recall (100,)``, ``proposals_per_video (100,)``.
    """
    tiou_thresholds = np.asarray(tiou_thresholds)
    video_lst = list(dict.fromkeys(v for v, _, _ in gt_rows))
    ratio = max_avg_nr_proposals * float(len(video_lst)) / len(proposal_rows)

    score_lst = []
    total_nr_proposals = 0
    for videoid in video_lst:
        this_video_ground_truth = np.array([[s, e] for v, s, e in gt_rows if v == videoid])
        props = [(s, e, p) for v, s, e, p in proposal_rows if v == videoid]
        if len(props) == 0:
            score_lst.append(np.zeros((len(this_video_ground_truth), 1)))
            continue
        sort_idx = official_argsort_desc([p for _, _, p in props])
        this_video_proposals = np.array([[props[i][0], props[i][1]] for i in sort_idx])
        nr_proposals = np.minimum(int(this_video_proposals.shape[0] * ratio), this_video_proposals.shape[0])
        total_nr_proposals += nr_proposals
        this_video_proposals = this_video_proposals[:nr_proposals, :]
        # wrapper_segment_iou(target=proposals, candidate=ground truth) -> (n_gt, n_proposals)
        tiou = np.empty((len(this_video_ground_truth), len(this_video_proposals)))
        for i in range(len(this_video_proposals)):
            tiou[:, i] = segment_iou(this_video_proposals[i, :], this_video_ground_truth, strict)
        score_lst.append(tiou)

    pcn_lst = np.arange(1, 101) / 100.0 * (max_avg_nr_proposals * float(len(video_lst)) / total_nr_proposals)
    matches = np.empty((len(video_lst), pcn_lst.shape[0]))
    positives = np.empty(len(video_lst))
    recall = np.empty((tiou_thresholds.shape[0], pcn_lst.shape[0]))
    for ridx, tiou in enumerate(tiou_thresholds):
        for i, score in enumerate(score_lst):
            positives[i] = score.shape[0]
            true_positives_tiou = score >= tiou
            pcn_proposals = np.minimum((score.shape[1] * pcn_lst).astype(int), score.shape[1])
            for j, nr_proposals in enumerate(pcn_proposals):
                matches[i, j] = np.count_nonzero((true_positives_tiou[:, :nr_proposals]).sum(axis=1))
        recall[ridx, :] = matches.sum(axis=0) / positives.sum()
    avg_recall = recall.mean(axis=0)
    proposals_per_video = pcn_lst * (float(total_nr_proposals) / len(video_lst))
    return recall, avg_recall, proposals_per_video


# ----------------------------------------------------------------------------------------------- NMS
def _iou_1d(x1, x2, y1, y2):
    inter = max(0.0, min(x2, y2) - max(x1, y1))
    union = (x2 - x1) + (y2 - y1) - inter
    return inter / union if union > 0 else 0.0


def softnms_1d_reference(segs, scores, iou_threshold, sigma, min_score, method):
    """ActionFormer's ``softnms_1d_cpu`` on lists: returns ``(kept input indices, kept scores)`` in order."""
    x1 = [s for s, _ in segs]
    x2 = [e for _, e in segs]
    sc = list(scores)
    inds = list(range(len(segs)))
    nsegs = len(segs)
    out_scores = []
    i = 0
    while i < nsegs:
        max_pos = i
        for pos in range(i + 1, nsegs):
            if sc[max_pos] < sc[pos]:
                max_pos = pos
        for arr in (x1, x2, sc, inds):
            arr[i], arr[max_pos] = arr[max_pos], arr[i]
        ix1, ix2, iscore = x1[i], x2[i], sc[i]
        out_scores.append(iscore)
        pos = i + 1
        while pos < nsegs:
            ovr = _iou_1d(ix1, ix2, x1[pos], x2[pos])
            weight = 1.0
            if method == "hard":
                if ovr >= iou_threshold:
                    weight = 0.0
            elif method == "linear":
                if ovr >= iou_threshold:
                    weight = 1 - ovr
            else:
                weight = math.exp(-(ovr * ovr) / sigma)
            sc[pos] *= weight
            if sc[pos] < min_score:
                for arr in (x1, x2, sc, inds):
                    arr[pos] = arr[nsegs - 1]
                nsegs -= 1
                pos -= 1
            pos += 1
        i += 1
    return inds[:nsegs], out_scores[:nsegs]


def soft_nms_reference(
    segs, scores, labels, method, sigma, iou_threshold, min_score, max_num, class_agnostic
):
    """ActionFormer ``batched_nms`` with Soft-NMS: per class (unless agnostic), cut, global sort, cut.

    Returns ``(kept input indices, kept scores)`` sorted by score descending.
    """
    groups = [0] * len(scores) if class_agnostic else list(labels)
    kept, kept_scores = [], []
    for g in sorted(set(groups)):
        idx = [i for i in range(len(scores)) if groups[i] == g]
        local, sc = softnms_1d_reference(
            [segs[i] for i in idx], [scores[i] for i in idx], iou_threshold, sigma, min_score, method
        )
        kept += [idx[j] for j in local][:max_num]
        kept_scores += sc[:max_num]
    order = sorted(range(len(kept)), key=lambda k: -kept_scores[k])[:max_num]
    return [kept[k] for k in order], [kept_scores[k] for k in order]


def nms_reference(segs, scores, labels, iou_threshold):
    """Plain greedy hard NMS: visit by score descending, keep unless a kept segment of the same label has
    tIoU >= threshold. Returns kept input indices."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept = []
    for i in order:
        if all(labels[i] != labels[k] or _iou_1d(*segs[i], *segs[k]) < iou_threshold for k in kept):
            kept.append(i)
    return kept


# ----------------------------------------------------------------------------------------------- test data
def random_case(
    rng,
    num_videos,
    num_classes,
    gt_per_video=3,
    preds_per_video=20,
    extra_videos=2,
    score_decimals=None,
    unknown_label_rate=0.05,
):
    """Random ground truth and predictions close to it, as row lists.

    Returns ``gt_rows [(video, label, s, e)]``, ``pred_rows [(video, label, s, e, score)]``, ``label_names``.
    Most predictions are jittered copies of a ground truth of their video (sometimes relabelled), the rest are
    random; ``extra_videos`` videos have predictions but no ground truth; ``score_decimals`` rounds scores to
    create ties; a fraction of predictions carries a label unknown to the ground truth.
    """
    label_names = [f"class_{c:03d}" for c in range(num_classes)]
    gt_rows = []
    for v in range(num_videos):
        for _ in range(int(rng.integers(0, 2 * gt_per_video + 1))):
            s = float(rng.uniform(0, 100))
            gt_rows.append(
                (f"video_{v}", label_names[int(rng.integers(num_classes))], s, s + float(rng.uniform(1, 30)))
            )
    by_video = {}
    for row in gt_rows:
        by_video.setdefault(row[0], []).append(row)
    pred_rows = []
    for v in range(num_videos + extra_videos):
        name = f"video_{v}"
        for _ in range(int(rng.integers(0, 2 * preds_per_video + 1))):
            score = float(rng.uniform(0, 1))
            if score_decimals is not None:
                score = round(score, score_decimals)
            if name in by_video and rng.uniform() < 0.7:
                _, label, s, e = by_video[name][int(rng.integers(len(by_video[name])))]
                length = e - s
                s, e = s + float(rng.normal(0, 0.1 * length)), e + float(rng.normal(0, 0.1 * length))
                if rng.uniform() < 0.2:
                    label = label_names[int(rng.integers(num_classes))]
            else:
                s = float(rng.uniform(0, 100))
                e = s + float(rng.uniform(1, 30))
                label = label_names[int(rng.integers(num_classes))]
            if rng.uniform() < unknown_label_rate:
                label = "not_a_class"
            pred_rows.append((name, label, s, e, score))
    return gt_rows, pred_rows, label_names


def ground_truth_from_rows(gt_rows, label_names, subset="validation", extra_videos=()):
    """An ``AnnotationSet`` from ``(video, label, s, e)`` rows (plus videos without instances)."""
    from tal.formats.annotations import AnnotationSet, VideoAnnotation

    videos = {}
    for video, label, s, e in gt_rows:
        segs, labels = videos.setdefault(video, ([], []))
        segs.append((s, e))
        labels.append(label)
    for video in extra_videos:
        videos.setdefault(video, ([], []))
    return AnnotationSet(
        {
            v: VideoAnnotation(v, subset, 200.0, np.array(segs, dtype=np.float64).reshape(-1, 2), labels)
            for v, (segs, labels) in videos.items()
        },
        list(label_names),
    )


def predictions_from_rows(pred_rows, with_labels=True):
    """``Predictions`` from ``(video, label, s, e, score)`` rows, keeping the row order."""
    from tal.formats.results import Predictions

    video_ids = list(dict.fromkeys(r[0] for r in pred_rows))
    vindex = {v: i for i, v in enumerate(video_ids)}
    label_names = sorted({r[1] for r in pred_rows}) if with_labels else None
    lindex = {n: i for i, n in enumerate(label_names or [])}
    return Predictions(
        video_ids,
        np.array([vindex[r[0]] for r in pred_rows], dtype=np.int64),
        np.array([[r[2], r[3]] for r in pred_rows], dtype=np.float64).reshape(-1, 2),
        np.array([r[4] for r in pred_rows], dtype=np.float64),
        np.array([lindex[r[1]] for r in pred_rows], dtype=np.int64) if with_labels else None,
        label_names,
    )
