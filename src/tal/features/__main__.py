"""``python -m tal.features VIDEO_DIR OUT_DIR key=value ...``: extract a feature store from raw videos.

Hydra composes ``conf/extract.yaml`` (keys: ``backbone``, ``weights``, ``feat_stride``, ``snippet_frames``,
``fps``, ``batch_size``, ``num_workers``, ``dtype``, and the ``trainer`` group: ``trainer=ddp`` / ``gpu`` /
``ddp_sim`` spread the videos over processes). ``VIDEO_DIR`` is a folder (searched recursively) or one video file.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from tal.utils.cli import config_dir, positional_overrides

USAGE = "python -m tal.features VIDEO_DIR OUT_DIR [key=value ...]"


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="extract")
def _main(cfg: DictConfig) -> None:
    from tal.features.extract import extract

    result = extract(
        cfg.video_dir,
        cfg.out_dir,
        backbone=cfg.backbone,
        weights=cfg.weights,
        feat_stride=cfg.feat_stride,
        snippet_frames=cfg.snippet_frames,
        fps=cfg.fps,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        dtype=cfg.dtype,
        seed=cfg.seed,
        trainer=OmegaConf.to_container(cfg.trainer, resolve=True),
    )
    if result.failed:
        sys.exit(1 if not result.written and not result.already_done else 0)


def main() -> None:
    sys.argv[1:] = positional_overrides(sys.argv[1:], ("video_dir", "out_dir"), USAGE)
    _main()


if __name__ == "__main__":
    main()
