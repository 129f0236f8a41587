"""``longsep train|separate|evaluate|study ...``: the installed command (``python -m longsep``).

Each subcommand takes the same arguments as its script (``train.py``, ``separate.py``,
``evaluate.py`` take Hydra overrides; ``study`` takes those of ``python -m longsep.study``),
with the configs shipped inside the package, so it works from any directory after
``pip install longsep``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

USAGE = """usage: longsep <command> [overrides ...]

commands:
  train      train a separator          longsep train separator=umx_transformer seq_len=30
  separate   separate audio files       longsep separate song.mp3 other.flac -o out/
  evaluate   score a model or oracle    longsep evaluate ckpt=<run or store>
  study      report of a study sweep    longsep study runs/multirun/seq_len_study --context

`longsep <command> --help` lists a command's options with their defaults."""


def _hydra_command(config_name: str, task: Callable[[Any], Any]) -> Callable[[], Any]:
    """``task`` as a Hydra app over the packaged ``conf/<config_name>.yaml``."""
    import hydra

    from longsep.cli.common import register_resolvers, user_errors
    from longsep.config import conf_dir

    register_resolvers()
    return hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name)(
        user_errors(task)
    )


def _train(cfg: Any) -> Any:
    from longsep.cli.train import train

    return train(cfg)


def _separate(cfg: Any) -> None:
    from longsep.cli.separate import separate

    separate(cfg)


def _evaluate(cfg: Any) -> None:
    from longsep.cli.evaluate import evaluate

    print(evaluate(cfg))


HYDRA_COMMANDS = {"train": _train, "separate": _separate, "evaluate": _evaluate}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv`` (default: the process arguments) to a subcommand."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    if command == "study":
        from longsep.cli.study import main as study

        return study(rest)
    if command not in HYDRA_COMMANDS:
        print(f"error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    from longsep.cli.help import describe, separate_overrides

    if command == "separate":
        rest = separate_overrides(rest)  # positional inputs and short flags; exits on --help
    elif "-h" in rest or "--help" in rest:
        sweep = " [-m: a sweep over comma-separated values]" if command == "train" else ""
        print(f"usage: longsep {command} [key=value ...]{sweep}\n\n{describe(command)}")
        print("\nHydra's own help (config groups, flags): --hydra-help")
        return 0
    sys.argv = [f"longsep-{command}", *rest]
    _hydra_command(command, HYDRA_COMMANDS[command])()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
