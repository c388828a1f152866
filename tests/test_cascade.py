"""The dense2sparse cascade refiner: region sampling, one grid_sample per batch, targets and decoding, per-stage
positives, finite losses without positives, the data (cap regime, input proposals, errors), and a cascade that
moves shifted proposals toward the ground truth on the `tiny` set."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from tal.data import TALDataModule
from tal.data.synthetic import ensure_dataset
from tal.formats import Predictions, ResultsError, load_results, write_results
from tal.formats.store import resize_features
from tal.models.bmn import bmn_candidates, bmn_proposals
from tal.models.cascade import (
    CascadeDataModule,
    CascadeModule,
    CascadeRefiner,
    cascade_loss,
    decode_boundaries,
    decode_center_width,
    encode_boundaries,
    encode_center_width,
    match_ground_truth,
    pad_proposals,
    refine_proposals,
    refined_proposals,
    region_positions,
    sample_regions,
    select_inputs,
    stage_targets,
)
from tal.ops.timeaxis import positions_to_sec
from tal.utils.io import atomic_write_json


# ------------------------------------------------------------------------------------------ sampling
def _ramp_value(x: np.ndarray, T: int) -> np.ndarray:
    """Linear interpolation of the ramp f[i] = i + 1 (i < T) with zeros outside the video, by hand."""
    inside = (x >= 0) & (x <= T - 1)
    before = (x > -1) & (x < 0)  # blends feature 0 (value 1) with the zero at -1
    after = (x > T - 1) & (x < T)  # blends feature T-1 (value T) with the zero at T
    return np.where(inside, x + 1, np.where(before, (1 + x) * 1.0, np.where(after, (T - x) * T, 0.0)))


def test_region_positions_follow_the_formula():
    s, e = 4.0, 8.0  # l = 4: start [2, 4], action [4, 8], end [8, 10]
    pos = region_positions(torch.tensor([[s, e]]), 32, 64, 32)[0].double().numpy()
    j32, j64 = np.arange(32) + 0.5, np.arange(64) + 0.5
    expected = np.concatenate([2 + 2 * j32 / 32, 4 + 4 * j64 / 64, 8 + 2 * j32 / 32])
    np.testing.assert_allclose(pos, expected, atol=1e-6)
    assert pos.shape == (128,) and np.all(np.diff(pos) > 0)  # the three regions tile [s - l/2, e + l/2]


def test_samples_land_on_a_ramp_and_read_zeros_past_the_video():
    T = 20
    ramp = torch.arange(1, T + 1, dtype=torch.float32)
    feats = torch.stack([ramp, 2 * ramp]).reshape(1, 2, T)  # (B=1, C=2, T)
    proposals = torch.tensor([[[4.0, 8.0], [-4.0, 2.0], [15.0, 25.0], [-30.0, -20.0], [0.3, 18.7]]])
    out = sample_regions(feats, proposals, 32, 64, 32)
    assert out.shape == (1, 2, 5, 128)
    x = region_positions(proposals, 32, 64, 32)[0].double().numpy()  # (5, 128)
    expected = _ramp_value(x, T)
    np.testing.assert_allclose(out[0, 0].double().numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(out[0, 1].double().numpy(), 2 * expected, atol=1e-4)
    assert (out[0, :, 3] == 0).all()  # a proposal wholly before the video reads zeros
    assert (out[0, :, 1, :32] == 0).all()  # [-7, -4]: the start region of [-4, 2] is past the video
    assert (out[0, :, 2, -32:] == 0).all()  # [25, 30]: the end region of [15, 25]


def test_one_grid_sample_per_stage_over_the_whole_batch(monkeypatch):
    calls = []
    real = F.grid_sample

    def counting(inp, grid, *args, **kwargs):
        calls.append((tuple(inp.shape), tuple(grid.shape)))
        return real(inp, grid, *args, **kwargs)

    monkeypatch.setattr(F, "grid_sample", counting)
    torch.manual_seed(0)
    B, C, T, K = 3, 6, 40, 7
    net = CascadeRefiner(C, num_stages=3, hidden_dim=8, num_start=8, num_action=16, num_end=8, pool=4)
    proposals = torch.sort(torch.rand(B, K, 2) * T, dim=-1).values
    bounds = torch.tensor([[0.0, T - 1.0]] * B)
    outs = net(torch.randn(B, C, T), torch.ones(B, T, dtype=torch.bool), proposals, bounds)
    assert len(outs) == 3 and len(calls) == 3  # one call per stage for all videos and proposals
    for inp_shape, grid_shape in calls:
        assert inp_shape == (B, 8, 1, T)  # each video's map once, never one copy per proposal
        assert grid_shape == (B, K, 32, 2)


def test_a_video_refines_alike_alone_or_padded_in_a_batch():
    torch.manual_seed(0)
    C, K = 5, 6
    net = CascadeRefiner(C, num_stages=3, hidden_dim=8, num_start=8, num_action=16, num_end=8, pool=4).eval()
    short, long = torch.randn(C, 30), torch.randn(C, 50)
    props = torch.sort(torch.rand(2, K, 2) * 28, dim=-1).values
    bounds = torch.tensor([[-0.5, 29.5], [-0.5, 49.5]])
    feats = torch.zeros(2, C, 50)
    feats[0, :, :30], feats[1] = short, long
    mask = torch.zeros(2, 50, dtype=torch.bool)
    mask[0, :30], mask[1] = True, True
    with torch.no_grad():
        batched = net(feats, mask, props, bounds)
        alone = net(short[None], torch.ones(1, 30, dtype=torch.bool), props[:1], bounds[:1])
    for b, a in zip(batched, alone):
        for key in ("boundary", "segment", "iou_logit", "refined"):
            torch.testing.assert_close(b[key][:1], a[key], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ targets
def test_targets_by_hand_and_decoding_inverts_them():
    p, g = torch.tensor([[10.0, 20.0]]), torch.tensor([[12.0, 24.0]])
    torch.testing.assert_close(encode_boundaries(p, g), torch.tensor([[0.2, 0.4]]))
    # c = 15, gc = 18, l = 10, gw = 12: ((18 - 15) / (0.1 * 10), log(12 / 10) / 0.2)
    torch.testing.assert_close(encode_center_width(p, g), torch.tensor([[3.0, math.log(1.2) / 0.2]]))
    gen = torch.Generator().manual_seed(0)
    start = torch.rand(50, 2, generator=gen) * 100
    p = torch.stack([start[:, 0], start[:, 0] + 1 + torch.rand(50, generator=gen) * 30], dim=1).double()
    g = torch.stack([start[:, 1], start[:, 1] + 1 + torch.rand(50, generator=gen) * 30], dim=1).double()
    for k in (1.0, 0.2):
        torch.testing.assert_close(decode_boundaries(p, encode_boundaries(p, g, k), k), g)
    torch.testing.assert_close(decode_center_width(p, encode_center_width(p, g, 0.1, 0.2), 0.1, 0.2), g)
    # predicting the exact targets makes the next proposal the ground truth (mean of two equal decodings)
    bounds = torch.tensor([[-1000.0, 1000.0]], dtype=torch.float64)
    refined = refine_proposals(
        p[None], encode_boundaries(p, g)[None], encode_center_width(p, g)[None], bounds
    )
    torch.testing.assert_close(refined[0], g)


def test_refined_proposals_are_ordered_and_clamped_to_the_video():
    p = torch.tensor([[[2.0, 6.0], [90.0, 98.0], [40.0, 50.0]]])
    boundary = torch.tensor([[[-2.0, 0.0], [0.0, 3.0], [3.0, -3.0]]])  # s -> -6; e -> 122; inverted
    segment = torch.zeros(1, 3, 2)
    out = refine_proposals(p, boundary, segment, torch.tensor([[-0.5, 99.5]]))
    # mean of [-6, 6] and [2, 6] = [-2, 6] -> clamped to -0.5; [90, 122] and [90, 98] -> [90, 110] -> 99.5
    torch.testing.assert_close(out[0, :2], torch.tensor([[-0.5, 6.0], [90.0, 99.5]]))
    # [70, 20] and [40, 50]: mean [55, 35] -> ordered [35, 55]
    torch.testing.assert_close(out[0, 2], torch.tensor([35.0, 55.0]))


def test_match_ground_truth_by_highest_tiou():
    gt = torch.tensor([[0.0, 10.0], [20.0, 30.0]])
    matched, has_gt = match_ground_truth(torch.tensor([[1.0, 9.0], [18.0, 29.0], [50.0, 60.0]]), gt)
    torch.testing.assert_close(matched[:2], gt)
    assert has_gt.all()
    matched, has_gt = match_ground_truth(torch.tensor([[1.0, 9.0]]), torch.zeros(0, 2))
    assert not has_gt.any()


def _stage_out(proposals: torch.Tensor) -> dict:
    B, K, _ = proposals.shape
    return {
        "proposals": proposals,
        "boundary": torch.zeros(B, K, 2, requires_grad=True),
        "segment": torch.zeros(B, K, 2, requires_grad=True),
        "iou_logit": torch.zeros(B, K, requires_grad=True),
    }


def test_each_stage_assigns_positives_with_its_own_threshold():
    gt = torch.tensor([[0.0, 10.0]])
    # [0, 10 / r] has tIoU r with [0, 10]
    proposals = torch.tensor([[[0.0, 10 / r] for r in (0.45, 0.55, 0.65, 0.75)]])
    matched, has_gt = match_ground_truth(proposals[0], gt)
    matched, has_gt = matched[None], has_gt[None]
    valid = torch.ones(1, 4, dtype=torch.bool)
    t = stage_targets(proposals, matched, has_gt, 0.6)
    torch.testing.assert_close(t["iou"][0], torch.tensor([0.45, 0.55, 0.65, 0.75]))
    assert t["positive"][0].tolist() == [False, False, True, True]
    outs = [_stage_out(proposals) for _ in range(3)]
    losses = cascade_loss(outs, matched, has_gt, valid, [0.5, 0.6, 0.7])
    assert [int(losses[f"s{i}/num_pos"]) for i in (1, 2, 3)] == [3, 2, 1]
    # tIoU is recomputed on each stage's own input: a refined input turns every proposal positive
    outs[2] = _stage_out(matched.clone())
    losses = cascade_loss(outs, matched, has_gt, valid, [0.5, 0.6, 0.7])
    assert int(losses["s3/num_pos"]) == 4 and float(losses["s3/mean_tiou"]) == pytest.approx(1.0)


def test_batch_without_positives_has_a_finite_loss():
    torch.manual_seed(0)
    B, C, T, K = 2, 4, 30, 5
    net = CascadeRefiner(C, num_stages=3, hidden_dim=8, num_start=4, num_action=8, num_end=4, pool=4)
    proposals = torch.tensor([[[1.0, 3.0]] * K, [[20.0, 28.0]] * K])
    bounds = torch.tensor([[0.0, T - 1.0]] * B)
    outs = net(torch.randn(B, C, T), torch.ones(B, T, dtype=torch.bool), proposals, bounds)
    # video 0: its only ground truth is far away (tIoU 0); video 1: no ground truth at all
    segments = [torch.tensor([[12.0, 16.0]]), torch.zeros(0, 2)]
    pairs = [match_ground_truth(p, g) for p, g in zip(proposals, segments)]
    matched, has_gt = torch.stack([m for m, _ in pairs]), torch.stack([h for _, h in pairs])
    valid = torch.ones(B, K, dtype=torch.bool)
    losses = cascade_loss(outs, matched, has_gt, valid, [0.5, 0.6, 0.7])
    assert torch.isfinite(losses["loss"]) and losses["loss"] > 0  # the IoU score still trains (target 0)
    assert all(losses[f"s{i}/{part}"].detach() == 0.0 for i in (1, 2, 3) for part in ("boundary", "segment"))
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


# ------------------------------------------------------------------------------------------ post-processing
def test_select_inputs_with_and_without_nms():
    segments = torch.tensor([[0.0, 10.0], [0.5, 10.0], [20.0, 30.0], [1.0, 10.5], [40.0, 45.0]])
    scores = torch.tensor([0.9, 0.8, 0.5, 0.7, 0.4])
    seg, sc = select_inputs(segments, scores, top_k=3, nms_on=False)
    assert sc.tolist() == pytest.approx([0.9, 0.8, 0.7])  # three near-duplicates of one action
    seg, sc = select_inputs(segments, scores, top_k=3, nms_on=True, nms_method="hard", nms_iou_threshold=0.7)
    assert seg.tolist() == [[0.0, 10.0], [20.0, 30.0], [40.0, 45.0]]
    seg, sc = select_inputs(segments, scores, top_k=2, nms_on=True, nms_method="gaussian", nms_sigma=0.4)
    # the duplicate [0.5, 10] (tIoU 0.95 with the best) decays to 0.8 * exp(-0.95^2 / 0.4) < 0.5
    assert seg.tolist() == [[0.0, 10.0], [20.0, 30.0]] and sc[1].item() == pytest.approx(0.5)


def test_output_score_is_input_score_times_iou_then_seconds():
    proposals = torch.tensor([[0.0, 10.0], [20.0, 30.0], [40.0, 60.0]])
    seg, sc = refined_proposals(
        proposals,
        torch.tensor([0.9, 0.5, 0.6]),
        torch.tensor([0.5, 1.0, 0.2]),
        sec_per_unit=0.5,
        offset_sec=0.25,
        duration_sec=25.0,
        nms_sigma=None,
    )
    assert sc.tolist() == pytest.approx([0.5, 0.45, 0.12])
    assert sc.dtype == torch.float64 and seg.dtype == torch.float64
    torch.testing.assert_close(seg, torch.tensor([[10.25, 15.25], [0.25, 5.25], [20.25, 25.0]]).double())


def test_bmn_without_nms_gives_its_best_candidates_as_the_cascade_input():
    gen = torch.Generator().manual_seed(0)
    start, end, conf_map = (
        torch.rand(24, generator=gen),
        torch.rand(24, generator=gen),
        torch.rand(2, 12, 24, generator=gen),
    )
    segments, scores = bmn_candidates(start, end, conf_map)
    order = torch.sort(scores, descending=True, stable=True).indices[:30]
    seg_sec, sc = bmn_proposals(start, end, conf_map, 0.5, 0.25, 11.0, nms_sigma=None, max_proposals=30)
    torch.testing.assert_close(sc, scores[order])
    torch.testing.assert_close(seg_sec, positions_to_sec(segments[order], 0.5, 0.25, 11.0))
    _, soft = bmn_proposals(start, end, conf_map, 0.5, 0.25, 11.0, max_proposals=30)
    assert (soft <= scores[order][0]).all() and not torch.equal(soft, sc)  # Soft-NMS decays the duplicates


# ------------------------------------------------------------------------------------------ data
def _store(tmp_path, lengths: dict[str, int], C: int = 4):
    d = tmp_path / "f"
    d.mkdir()
    db = {}
    for i, (v, T) in enumerate(lengths.items()):
        db[v] = {
            "subset": "training" if i % 2 == 0 else "validation",
            "duration": T * 16 / 30,
            "fps": 30.0,
            "annotations": [{"label": "x", "segment": [2.0, 6.0]}],
        }
        np.save(d / f"{v}.npy", np.random.default_rng(i).standard_normal((T, C)).astype(np.float32))
    ann = tmp_path / "ann.json"
    atomic_write_json(ann, {"database": db})
    return str(ann), str(d)


def test_cap_regime_resizes_only_long_videos_and_keeps_the_time_axis(tmp_path):
    ann, d = _store(tmp_path, {"long": 50, "short": 30})
    kw = dict(annotation_file=ann, feature_dirs=[d], val_subset="training", test_subset="validation")
    cap = TALDataModule(regime="cap", max_seq_len=40, verbose=False, **kw)
    native = TALDataModule(regime="native", max_seq_len=64, crop_ratio=None, verbose=False, **kw)
    for dm in (cap, native):
        dm.setup()
    long_item, short_item = cap.dataset("val")[0], cap.dataset("test")[0]
    # short: exactly the native item
    ref = native.dataset("test")[0]
    assert short_item["feats"].shape == (4, 30) and torch.equal(short_item["feats"], ref["feats"])
    assert short_item["sec_per_unit"] == ref["sec_per_unit"] and short_item["offset_sec"] == ref["offset_sec"]
    # long: resized to 40; feature j stands where input position (j + 0.5) * 50 / 40 - 0.5 stood
    raw = np.load(f"{d}/long.npy")
    assert long_item["feats"].shape == (4, 40)
    torch.testing.assert_close(long_item["feats"], resize_features(raw, 40).T)
    j = np.arange(40.0)
    t_resized = positions_to_sec(j, long_item["sec_per_unit"], long_item["offset_sec"])
    t_input = positions_to_sec((j + 0.5) * 50 / 40 - 0.5, 16 / 30, 8 / 30)
    np.testing.assert_allclose(t_resized, t_input, atol=1e-12)
    seg_sec = positions_to_sec(
        long_item["segments"].double(), long_item["sec_per_unit"], long_item["offset_sec"]
    )
    np.testing.assert_allclose(seg_sec.numpy(), [[2.0, 6.0]], atol=1e-5)
    # batches pad to the longest video of the batch, not to the cap
    batch = next(iter(cap._loader("val", training=False)))
    assert batch["feats"].shape == (1, 4, 40)


def _write_inputs(folder, dm: TALDataModule, splits, per_gt: int = 6, background: int = 4, seed: int = 0):
    """Input proposals for ``splits``: each ground truth shifted and rescaled ``per_gt`` times (tIoU mostly
    0.3-0.9), plus background proposals; scores favour the better ones a little."""
    rng = np.random.default_rng(seed)
    for split in splits:
        rows = []
        for vid in dm.video_ids(split):
            video = dm.ground_truth(split)[vid]
            segs, scores = [], []
            for s, e in video.segments_sec:
                length = e - s
                for _ in range(per_gt):
                    shift, scale = rng.uniform(-0.3, 0.3) * length, rng.uniform(0.75, 1.35)
                    c = 0.5 * (s + e) + shift
                    segs.append([c - 0.5 * length * scale, c + 0.5 * length * scale])
                    scores.append(rng.uniform(0.3, 1.0))
            for _ in range(background):
                a = rng.uniform(0, video.duration_sec * 0.9)
                segs.append([a, a + rng.uniform(0.5, 3.0)])
                scores.append(rng.uniform(0.05, 0.5))
            segs = np.clip(np.array(segs).reshape(-1, 2), 0.0, video.duration_sec)
            rows.append((vid, segs, np.array(scores), None))
        write_results(folder / f"proposals_{split}.json", Predictions.from_videos(rows))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cascade")
    ensure_dataset(root / "data", "tiny", seed=0)
    return root


def _args(root) -> dict:
    return dict(
        synthetic={"preset": "tiny", "seed": 0, "root": str(root / "data")},
        views=["i3d", "slowfast"],
        train_subset="training",
        val_subset="training",  # the tiny test measures what the cascade learnt on its training videos
        test_subset="validation",
        batch_size=4,
        verbose=False,
    )


def _with_inputs(root, folder, **kwargs) -> CascadeDataModule:
    """Input proposal files for train and val in ``folder`` (val = the training videos), and the datamodule."""
    plain = TALDataModule(**_args(root))
    plain.setup()
    _write_inputs(folder, plain, ["train"])
    (folder / "proposals_val.json").write_bytes((folder / "proposals_train.json").read_bytes())
    dm = CascadeDataModule(proposals_dir=str(folder), **{**_args(root), **kwargs})
    dm.setup("fit")
    return dm


def test_missing_proposals_name_the_command_the_file_and_the_video(tiny, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"Make them first:\n  python -m tal.run experiment=bmn_synthetic"
    ):
        CascadeDataModule(**_args(tiny)).setup("fit")
    dm = CascadeDataModule(
        proposals_dir=str(tmp_path), proposals_command="python -m tal.run experiment=X", **_args(tiny)
    )
    with pytest.raises(
        FileNotFoundError, match=r"proposals_train.json: no input proposals for the train split"
    ):
        dm.setup("fit")
    dm = _with_inputs(tiny, tmp_path)
    data = json.loads((tmp_path / "proposals_train.json").read_text())
    dropped = sorted(data["results"])[3]
    del data["results"][dropped]
    atomic_write_json(tmp_path / "proposals_val.json", data)
    with pytest.raises(ResultsError, match=rf"proposals_val.json: no proposals for video '{dropped}'"):
        dm.input_proposals("val")


def test_predicting_alone_needs_only_the_predicted_splits_files(tiny, tmp_path):
    plain = TALDataModule(**_args(tiny))
    plain.setup()
    _write_inputs(tmp_path, plain, ["test"])  # no train / val files
    dm = CascadeDataModule(proposals_dir=str(tmp_path), **_args(tiny))
    dm.setup("predict")
    assert set(dm.input_proposals("test")) == set(dm.video_ids("test"))
    with pytest.raises(FileNotFoundError, match=r"proposals_val.json: no input proposals for the val split"):
        CascadeDataModule(proposals_dir=str(tmp_path), **_args(tiny)).setup("validate")


def test_items_carry_the_selected_input_proposals_on_their_axis(tiny, tmp_path):
    dm = _with_inputs(tiny, tmp_path, input={"top_k": 5, "nms": False})
    assert dm.max_seq_len == 1000 and dm.regime == "cap"
    file = dict(load_results(tmp_path / "proposals_train.json").per_video())
    batch = next(iter(dm.val_dataloader()))
    for b, idx in enumerate(batch["video_idx"].tolist()):
        rows = file[dm.video_ids("val")[idx]]
        best = np.argsort(-rows.scores, kind="stable")[:5]
        spu, off = batch["sec_per_unit"][b].item(), batch["offset_sec"][b].item()
        sec = positions_to_sec(batch["proposals"][b].double(), spu, off)
        np.testing.assert_allclose(sec.numpy(), rows.segments_sec[best], atol=1e-4)
        np.testing.assert_allclose(batch["proposal_scores"][b].numpy(), rows.scores[best], rtol=1e-6)
    padded, scores, valid = pad_proposals(batch["proposals"], batch["proposal_scores"])
    assert padded.shape == (len(valid), 5, 2) and valid.all()


# ------------------------------------------------------------------------------------------ end to end
def test_cascade_moves_shifted_proposals_toward_the_ground_truth(tiny, tmp_path):
    pl.seed_everything(0)
    torch.set_num_threads(1)
    dm = _with_inputs(tiny, tmp_path, input={"top_k": 64, "nms": False})
    model = CascadeModule(
        dm.in_channels,
        network={"hidden_dim": 64, "dropout": 0.0},
        lr=2e-3,
        postprocess={"max_proposals": 100},
    )
    trainer = pl.Trainer(
        max_epochs=12,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        check_val_every_n_epoch=12,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path / "run"),
    )
    trainer.fit(model, datamodule=dm)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    tious = [m[f"val/tiou_s{i}"] for i in range(4)]
    assert tious[0] < tious[1] < tious[2] < tious[3], tious
    assert tious[3] > tious[0] + 0.1, tious
    results = json.loads((tmp_path / "run" / "proposals_val.json").read_text())["results"]
    assert len(results) == len(dm.video_ids("val")) and all(len(r) <= 64 for r in results.values())
