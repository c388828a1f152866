"""The official ActionFormer code (github.com/happyharrycn/actionformer_release), used from a checkout given by
path: imported, configured at the parity budget, trained and run on CPU, its weights mapped onto tal's modules.

Nothing of the official code is copied here; it is imported from the checkout. Its NMS is a C++ extension: build
it in the checkout as its INSTALL.md says (``cd libs/utils && python setup.py install --user``, or ``build_ext
--inplace`` to keep it in the checkout, which is also looked for).
"""

from __future__ import annotations

import copy
import importlib
import math
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

#: the parity budget (experiments/actionformer_parity/README.md), the official config keys it sets
BUDGET = {
    "dataset": {
        "feat_stride": 16,
        "num_frames": 16,
        "default_fps": None,  # each video's fps from the annotation file (30 for the synthetic set)
        "input_dim": 256,
        "num_classes": 20,
        "max_seq_len": 576,
        "trunc_thresh": 0.5,
        "crop_ratio": [0.9, 1.0],
        "file_prefix": None,
        "file_ext": ".npy",
    },
    "model": {"embd_dim": 128, "fpn_dim": 128, "head_dim": 128, "n_mha_win_size": 19, "fpn_type": "identity"},
    "opt": {"learning_rate": 1e-4, "weight_decay": 0.05, "epochs": 30, "warmup_epochs": 5},
    "loader": {"batch_size": 2, "num_workers": 1},
    "train_cfg": {"init_loss_norm": 100, "clip_grad_l2norm": 1.0, "droppath": 0.1},
    "test_cfg": {
        "pre_nms_thresh": 0.001,
        "pre_nms_topk": 2000,
        "iou_threshold": 0.1,
        "min_score": 0.001,
        "max_seg_num": 200,
        "nms_method": "soft",
        "nms_sigma": 0.5,
        "duration_thresh": 0.05,
        "multiclass_nms": True,
        "voting_thresh": 0.7,
    },
}


def load(checkout: str | Path) -> SimpleNamespace:
    """Import the official packages from ``checkout``: ``core, datasets, modeling, utils`` (``libs.*``)."""
    root = Path(checkout).resolve()
    if not (root / "libs" / "modeling" / "meta_archs.py").is_file():
        raise SystemExit(f"{root}: not a checkout of actionformer_release (no libs/modeling/meta_archs.py)")
    sys.path.insert(0, str(root))
    try:
        importlib.import_module("nms_1d_cpu")
    except ImportError:
        sys.path.insert(0, str(root / "libs" / "utils"))  # an in-place build of the extension
        try:
            importlib.import_module("nms_1d_cpu")
        except ImportError as e:
            raise SystemExit(
                f"the official NMS extension nms_1d_cpu is not built ({e}); build it in {root / 'libs/utils'} "
                "as the official INSTALL.md says"
            ) from None
    names = ("core", "datasets", "modeling", "utils")
    return SimpleNamespace(root=root, **{n: importlib.import_module(f"libs.{n}") for n in names})


def config(off: SimpleNamespace, data_dir: str | Path, seed: int = 1, **overrides) -> dict:
    """The official THUMOS14 config (``configs/thumos_i3d.yaml`` over its defaults) at the parity budget, on the
    data set in ``data_dir`` (``annotations_gt.json`` + ``features/feats/<video>.npy``), on CPU."""
    defaults = copy.deepcopy(off.core.config.DEFAULTS)  # load_config merges into the defaults it is given
    cfg = off.core.load_config(str(off.root / "configs" / "thumos_i3d.yaml"), defaults=defaults)
    data_dir = Path(data_dir).resolve()
    for section, values in BUDGET.items():
        cfg[section].update(copy.deepcopy(values))
    cfg["dataset"]["json_file"] = str(data_dir / "annotations_gt.json")
    cfg["dataset"]["feat_folder"] = str(data_dir / "features" / "feats")
    cfg["init_rand_seed"] = int(seed)
    cfg["devices"] = ["cpu"]
    for key, value in overrides.items():
        section, name = key.split(".")
        cfg[section][name] = value
    # what load_config derives from the dataset section
    cfg["model"].update(
        input_dim=cfg["dataset"]["input_dim"],
        num_classes=cfg["dataset"]["num_classes"],
        max_seq_len=cfg["dataset"]["max_seq_len"],
        train_cfg=cfg["train_cfg"],
        test_cfg=cfg["test_cfg"],
    )
    cfg["model"]["train_cfg"].setdefault("head_empty_cls", [])
    return cfg


def build_model(off: SimpleNamespace, cfg: dict) -> torch.nn.Module:
    """The official ``LocPointTransformer`` of ``cfg`` (on CPU)."""
    return off.modeling.make_meta_arch(cfg["model_name"], **cfg["model"])


class _PaddingAwareMaxPool(torch.nn.Module):
    """A ``MaxPool1d`` that ignores padded positions (all-zero columns), as tal's pooled skip does."""

    def __init__(self, pool: torch.nn.MaxPool1d):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = (x == 0).all(dim=1, keepdim=True)
        out = self.pool(x.masked_fill(padded, float("-inf")))
        return out.masked_fill(torch.isinf(out), 0.0)


def use_tal_padding(off: SimpleNamespace, model: torch.nn.Module):
    """A harness variant, not the official behaviour: make the official network read padding as tal does, to
    measure what that difference costs. Officially a LayerNorm at a padded position outputs its bias, which the
    next conv / depthwise conv / attention reads at the last valid positions, and the pooled skip of a
    down-sampling block compares the last valid value with a padded 0. Here every LayerNorm outputs 0 on an
    all-zero (padded) column and the pooled skip ignores padded columns. Patches the official ``LayerNorm``
    class and the pooled skips of ``model``; returns a function that undoes both."""
    ln = off.modeling.blocks.LayerNorm
    forward = ln.forward

    def masked_forward(self, x):
        return forward(self, x) * (x != 0).any(dim=1, keepdim=True).to(x.dtype)

    ln.forward = masked_forward
    pools = [m for m in model.modules() if isinstance(getattr(m, "pool_skip", None), torch.nn.MaxPool1d)]
    for m in pools:
        m.pool_skip = _PaddingAwareMaxPool(m.pool_skip)

    def undo() -> None:
        ln.forward = forward
        for m in pools:
            m.pool_skip = m.pool_skip.pool

    return undo


def use_revived_offsets(off: SimpleNamespace) -> None:
    """A harness variant, not the official behaviour: the official offsets' ReLU (``F.relu`` in
    ``libs/modeling/meta_archs.py``, its only use there) with tal's pass-through gradient below zero
    (:func:`tal.models.actionformer.relu_pass_through`; same outputs), to show that it is what keeps a dead
    offset channel from training. Patches the module's ``F`` for this process."""
    from tal.models.actionformer import relu_pass_through

    class Functional(SimpleNamespace):
        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)

    off.modeling.meta_archs.F = Functional(relu=relu_pass_through)


def dataset(off: SimpleNamespace, cfg: dict, training: bool):
    split = cfg["train_split"] if training else cfg["val_split"]
    return off.datasets.make_dataset(cfg["dataset_name"], training, split, **cfg["dataset"])


def _no_cuda_sync() -> None:
    """The official loops call ``torch.cuda.synchronize()`` to time their log lines; on a machine without a GPU
    that raises, so it becomes a no-op (it only synchronises timing, never the computation)."""
    if not torch.cuda.is_available():
        torch.cuda.synchronize = lambda *args, **kwargs: None


def train(off: SimpleNamespace, cfg: dict, print_freq: int = 50, tal_padding: bool = False):
    """Train as the official ``train.py`` does (seeds, data loader, AdamW groups, warm-up + cosine per step,
    EMA, gradient clipping, ``train_one_epoch``), on CPU and without ``DataParallel`` (a no-op wrapper without
    a GPU); ``tal_padding``: the :func:`use_tal_padding` variant. Returns ``(model, model_ema, label_names)``."""
    _no_cuda_sync()
    rng = off.utils.fix_random_seed(cfg["init_rand_seed"], include_cuda=True)
    train_set = dataset(off, cfg, training=True)
    cfg["model"]["train_cfg"]["head_empty_cls"] = train_set.get_attributes()["empty_label_ids"]
    loader = off.datasets.make_data_loader(train_set, True, rng, **cfg["loader"])
    model = build_model(off, cfg)
    if tal_padding:
        use_tal_padding(off, model)
    optimizer = off.utils.make_optimizer(model, cfg["opt"])
    scheduler = off.utils.make_scheduler(optimizer, cfg["opt"], len(loader))
    model_ema = off.utils.ModelEma(model)
    epochs = cfg["opt"]["epochs"] + cfg["opt"]["warmup_epochs"]
    for epoch in range(epochs):
        off.utils.train_one_epoch(
            loader,
            model,
            optimizer,
            scheduler,
            epoch,
            model_ema=model_ema,
            clip_grad_l2norm=cfg["train_cfg"]["clip_grad_l2norm"],
            tb_writer=None,
            print_freq=print_freq,
        )
    names = {i: name for name, i in train_set.label_dict.items()}
    return model, model_ema, [names[i] for i in range(len(names))]


def predict(off: SimpleNamespace, cfg: dict, model: torch.nn.Module) -> dict:
    """Detections of the validation split (``val_split``, Test for THUMOS14) as the official ``eval.py`` makes
    them (one video per batch, ``valid_one_epoch``): ``{"video-id", "t-start", "t-end", "label", "score"}``."""
    import pickle
    import tempfile

    _no_cuda_sync()
    val_set = dataset(off, cfg, training=False)
    loader = off.datasets.make_data_loader(val_set, False, None, 1, cfg["loader"]["num_workers"])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.pkl"
        off.utils.valid_one_epoch(loader, model, -1, output_file=str(out), print_freq=10**9)
        with open(out, "rb") as f:
            return pickle.load(f)


# ---------------------------------------------------------------------------------------- weights onto tal
#: official state-dict key (regex) -> tal ``ActionFormerNet`` key (``\1`` ... from the regex)
_KEY_MAP = [
    (r"backbone\.embd\.(\d+)\.conv\.weight", r"embed.\1.weight"),
    (r"backbone\.embd_norm\.(\d+)\.(weight|bias)", r"embed_norms.\1.\2"),
    (r"backbone\.(stem|branch)\.(\d+)\.ln1\.(weight|bias)", r"\1.\2.norm1.\3"),
    (r"backbone\.(stem|branch)\.(\d+)\.ln2\.(weight|bias)", r"\1.\2.norm2.\3"),
    (r"backbone\.(stem|branch)\.(\d+)\.attn\.query_conv\.conv\.weight", r"\1.\2.attn.dw_convs.0.weight"),
    (r"backbone\.(stem|branch)\.(\d+)\.attn\.key_conv\.conv\.weight", r"\1.\2.attn.dw_convs.1.weight"),
    (r"backbone\.(stem|branch)\.(\d+)\.attn\.value_conv\.conv\.weight", r"\1.\2.attn.dw_convs.2.weight"),
    (r"backbone\.(stem|branch)\.(\d+)\.attn\.query_norm\.(weight|bias)", r"\1.\2.attn.dw_norms.0.\3"),
    (r"backbone\.(stem|branch)\.(\d+)\.attn\.key_norm\.(weight|bias)", r"\1.\2.attn.dw_norms.1.\3"),
    (r"backbone\.(stem|branch)\.(\d+)\.attn\.value_norm\.(weight|bias)", r"\1.\2.attn.dw_norms.2.\3"),
    (r"backbone\.(stem|branch)\.(\d+)\.attn\.query\.(weight|bias)", r"\1.\2.attn.q_proj.\3"),
    (r"backbone\.(stem|branch)\.(\d+)\.attn\.key\.(weight|bias)", r"\1.\2.attn.k_proj.\3"),
    (r"backbone\.(stem|branch)\.(\d+)\.attn\.value\.(weight|bias)", r"\1.\2.attn.v_proj.\3"),
    (r"backbone\.(stem|branch)\.(\d+)\.attn\.proj\.(weight|bias)", r"\1.\2.attn.proj.\3"),
    (r"backbone\.(stem|branch)\.(\d+)\.mlp\.(\d+)\.(weight|bias)", r"\1.\2.mlp.\3.\4"),
    (r"backbone\.(stem|branch)\.(\d+)\.drop_path_attn\.scale", r"\1.\2.ls1.gamma"),
    (r"backbone\.(stem|branch)\.(\d+)\.drop_path_mlp\.scale", r"\1.\2.ls2.gamma"),
    (r"neck\.fpn_norms\.(\d+)\.(weight|bias)", r"neck.\1.\2"),
    (r"cls_head\.head\.(\d+)\.conv\.weight", r"cls_head.convs.\1.weight"),
    (r"cls_head\.norm\.(\d+)\.(weight|bias)", r"cls_head.norms.\1.\2"),
    (r"cls_head\.cls_head\.conv\.(weight|bias)", r"cls_head.out.\1"),
    (r"reg_head\.head\.(\d+)\.conv\.weight", r"reg_head.convs.\1.weight"),
    (r"reg_head\.norm\.(\d+)\.(weight|bias)", r"reg_head.norms.\1.\2"),
    (r"reg_head\.offset_head\.conv\.(weight|bias)", r"reg_head.out.\1"),
    (r"reg_head\.scale\.(\d+)\.scale", r"reg_scales.\1.scale"),
]


def key_map(official_state: dict, tal_net: torch.nn.Module) -> dict[str, str]:
    """``{official key: tal key}`` for every tensor of an official state dict (see :func:`to_tal_state_dict`)."""
    target = tal_net.state_dict()
    out = {}
    for key in official_state:
        for pattern, repl in _KEY_MAP:
            if re.fullmatch(pattern, key.removeprefix("module.")):
                out[key] = re.sub(pattern, repl, key.removeprefix("module."))
                break
        else:
            raise KeyError(f"official parameter {key!r} has no counterpart in tal's ActionFormerNet")
        if out[key] not in target:
            raise KeyError(f"official {key!r} -> {out[key]!r}: not a key of tal's ActionFormerNet")
    if len(set(out.values())) != len(out) or set(out.values()) != set(target):
        missing = sorted(set(target) - set(out.values()))
        raise KeyError(
            f"official and tal parameters do not map one to one (tal without counterpart: {missing[:5]})"
        )
    return out


def to_tal_state_dict(official_state: dict, tal_net: torch.nn.Module) -> dict:
    """Map an official ``LocPointTransformer`` state dict onto tal's :class:`ActionFormerNet` ``tal_net``
    (same sizes, ``separate_qkv_convs=True``, LayerScale on): every official tensor reshaped to tal's shape
    ((1, C, 1) LayerNorm / scale vectors -> (C,), 1x1 ``Conv1d`` -> ``Linear``). Every key of both sides must be
    used exactly once, or this raises."""
    target = tal_net.state_dict()
    out = {}
    for key, name in key_map(official_state, tal_net).items():
        value = official_state[key]
        if math.prod(value.shape) != math.prod(target[name].shape):
            raise ValueError(
                f"official {key!r} {tuple(value.shape)} vs tal {name!r} {tuple(target[name].shape)}"
            )
        out[name] = value.detach().reshape(target[name].shape).clone()
    return out
