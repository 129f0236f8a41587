"""Separate songs: ``python separate.py model=runs/umx/model input=song.mp3 out_dir=separated``."""

import hydra
from omegaconf import DictConfig

from longsep.cli.common import user_errors
from longsep.cli.separate import separate


@hydra.main(version_base="1.3", config_path="conf", config_name="separate")
@user_errors
def main(cfg: DictConfig) -> None:
    separate(cfg)


if __name__ == "__main__":
    main()
