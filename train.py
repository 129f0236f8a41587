"""Train a separator: ``python train.py separator=umx_transformer attention=qkvg1D seq_len=30``."""

import hydra
from omegaconf import DictConfig

from longsep.cli.common import register_resolvers, user_errors
from longsep.cli.train import train

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@user_errors
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
