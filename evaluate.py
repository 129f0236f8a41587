"""Evaluate: ``python evaluate.py ckpt=runs/umx-vocals-6s/<date>`` (or ``oracle=irm1``,
``compare=[dirA,dirB]``)."""

import hydra
from omegaconf import DictConfig

from longsep.cli.common import user_errors
from longsep.cli.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@user_errors
def main(cfg: DictConfig) -> None:
    print(evaluate(cfg))


if __name__ == "__main__":
    main()
