"""Build separators from the Hydra configs in ``conf/separator`` and ``conf/attention``.

- :func:`build_network`: compose ``conf/build.yaml`` with a separator and an
  attention choice and instantiate it (for Python users and tests);
- :func:`instantiate_network`: the separator of a composed training config;
- :func:`network_config`: the resolved separator node that a model store records;
- :func:`valid_combinations` / :func:`is_valid_combination`: which pairs exist;
- :func:`network_from_node`: a separator from a plain config node, with an exact
  allow-list of classes (how model files are turned into networks, without Hydra).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from longsep.config import conf_dir
from longsep.errors import LongsepError
from longsep.models.attention import ATTENTIONS
from longsep.models.auto_transformer import AutoTransformer
from longsep.models.umx import UMX
from longsep.models.umx_transformer import UMXTransformer

log = logging.getLogger(__name__)

SEPARATORS: dict[str, str] = {
    "umx": "longsep.models.umx.UMX",
    "umx_transformer": "longsep.models.umx_transformer.UMXTransformer",
    "auto_transformer": "longsep.models.auto_transformer.AutoTransformer",
}
SEPARATOR_CLASSES: dict[str, type[nn.Module]] = {
    SEPARATORS["umx"]: UMX,
    SEPARATORS["umx_transformer"]: UMXTransformer,
    SEPARATORS["auto_transformer"]: AutoTransformer,
}
# the public path configs and model files name (conf/attention/*.yaml `_target_`)
ATTENTION_TARGETS: dict[str, str] = {
    name: f"longsep.models.attention.{cls.__qualname__}" for name, cls in ATTENTIONS.items()
}
ATTENTION_CLASSES: dict[str, type[nn.Module]] = {
    ATTENTION_TARGETS[name]: cls for name, cls in ATTENTIONS.items()
}
DEFAULT_ATTENTION = "mha"

# The one spelling of "no attention choice": null, or `default` (conf/attention/default.yaml,
# the sweepable form of null, since Hydra refuses null as a group sweep value)
NO_ATTENTION: tuple[str | None, ...] = (None, "", "null", "None", "default")


def is_no_attention(attention: Any) -> bool:
    """Whether an ``attention`` choice selects no attention config."""
    return attention is None or str(attention) in NO_ATTENTION


def _group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def _check_option(group: str, name: str) -> None:
    if name not in _group_options(group):
        raise LongsepError(f"{group}={name} does not exist: choose one of {_group_options(group)}")


def takes_attention(separator: str) -> bool:
    """Whether ``conf/separator/<separator>.yaml`` (or a config it extends) has ``attention``."""
    _check_option("separator", separator)
    node = OmegaConf.load(conf_dir() / "separator" / f"{separator}.yaml")
    bases = [d for d in node.get("defaults", []) if isinstance(d, str) and d != "_self_"]
    return "attention" in node or any(takes_attention(base) for base in bases)


def is_valid_combination(separator: str, attention: str | None) -> bool:
    """Whether ``separator=<separator> attention=<attention>`` builds a model.

    Any separator config may go without attention (transformers then use
    ``mha``); only those with an ``attention`` key accept one.
    """
    if is_no_attention(attention):
        return True
    return takes_attention(separator) and attention in _group_options("attention")


def valid_combinations(
    separators: list[str] | None = None,
) -> list[tuple[str, str | None]]:
    """Every ``(separator, attention)`` pair the configs define, ``None`` for no attention
    choice; ``separators`` limits the separator configs (default: all of them)."""
    names = separators if separators is not None else _group_options("separator")
    attentions = _group_options("attention")
    pairs: list[tuple[str, str | None]] = []
    for name in names:
        pairs.append((name, None))
        if takes_attention(name):
            pairs += [(name, a) for a in attentions if not is_no_attention(a)]
    return pairs


def _no_attention_error(separator: str, attention: str) -> LongsepError:
    return LongsepError(f"separator={separator} has no attention; drop attention={attention}")


def _name(target: str | None, registry: dict[str, str]) -> str:
    return next((k for k, v in registry.items() if v == target), str(target))


def _choices() -> dict[str, Any]:
    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def _default_attention() -> dict[str, Any]:
    log.info("attention=null: the transformer uses attention=%s", DEFAULT_ATTENTION)
    node = OmegaConf.load(conf_dir() / "attention" / f"{DEFAULT_ATTENTION}.yaml")
    return OmegaConf.to_container(node, resolve=True)


def network_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved ``separator`` node of ``cfg`` with its attention filled in.

    ``cfg`` is a training config (keys ``separator``, ``attention``, ``stft``,
    ``nb_channels``, ``seq_len``). A separator without an ``attention`` key given
    an attention is an error; a transformer given none gets ``mha``.
    """
    try:
        node = OmegaConf.to_container(cfg.separator, resolve=True)
        attention = OmegaConf.to_container(cfg.attention) if cfg.get("attention") else None
    except OmegaConfBaseException as exc:
        raise LongsepError(f"cannot resolve the separator config: {exc}") from exc
    if "attention" not in node:
        if attention is not None:
            choices = _choices()
            raise _no_attention_error(
                choices.get("separator") or _name(node.get("_target_"), SEPARATORS),
                choices.get("attention") or _name(attention.get("_target_"), ATTENTION_TARGETS),
            )
    elif node["attention"] is None:
        node["attention"] = _default_attention()
    return node


def _plain(value: Any) -> bool:
    """Whether ``value`` is plain data: a scalar, or a list of plain values (no mappings)."""
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, bool | int | float | str)


def _arguments(node: dict[str, Any], allowed: set[str], source: str) -> dict[str, Any]:
    """The constructor arguments of ``node``: plain values only, no Hydra keys but
    ``allowed`` ones (``_target_``, ``_partial_: true``)."""
    args = {}
    for key, value in node.items():
        if key in allowed:
            continue
        if str(key).startswith("_") or not _plain(value):
            raise LongsepError(
                f"{source}: refusing the separator config: {key!r} is not a plain argument "
                "(model files may only name longsep's separator and attention classes)"
            )
        args[str(key)] = value
    return args


def _attention_from_node(node: Any, source: str) -> str | functools.partial | None:
    """The attention argument of a separator node: None, a name, or a partial of an
    allowed attention class."""
    if node is None or isinstance(node, str):
        return node
    if not isinstance(node, dict) or node.get("_target_") not in ATTENTION_CLASSES:
        target = node.get("_target_") if isinstance(node, dict) else node
        raise LongsepError(f"{source}: refusing to build attention {target!r}")
    if node.get("_partial_") is not True:
        raise LongsepError(f"{source}: the attention config must be a _partial_ factory")
    args = _arguments(node, {"_target_", "_partial_"}, source)
    return functools.partial(ATTENTION_CLASSES[node["_target_"]], **args)


def network_from_node(node: Any, source: str) -> nn.Module:
    """Build the separator of a plain config node (``_target_`` + arguments).

    ``_target_`` must be one of :data:`SEPARATOR_CLASSES` exactly, the ``attention``
    argument None, a name or a ``_partial_`` node of an attention class, and every other
    value plain data: nothing else is imported or called, so a model file received from
    someone else cannot run code. ``source`` names the file in errors.
    """
    if not isinstance(node, dict) or node.get("_target_") not in SEPARATOR_CLASSES:
        target = node.get("_target_") if isinstance(node, dict) else node
        raise LongsepError(f"{source}: refusing to build {target!r} (not a longsep separator)")
    node = dict(node)
    attention = node.pop("attention", None)
    args = _arguments(node, {"_target_"}, source)
    if attention is not None:
        args["attention"] = _attention_from_node(attention, source)
    try:
        return SEPARATOR_CLASSES[node["_target_"]](**args)
    except LongsepError as exc:
        raise LongsepError(f"{source}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise LongsepError(f"{source}: cannot build the separator: {exc}") from exc


def instantiate_network(cfg: DictConfig) -> nn.Module:
    """Build the separator of a composed training config (see :func:`network_config`)."""
    return network_from_node(network_config(cfg), "separator config")


@contextmanager
def _compose_context() -> Iterator[None]:
    """Initialise Hydra on ``conf/`` for a compose, restoring any global Hydra state after."""
    saved = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().clear()
        if saved is not None:
            GlobalHydra.instance().initialize(saved)


def _override_path(cfg: DictConfig, separator: str, key: str) -> str:
    """Where ``key`` lives: the separator, else the attention, else the top level."""
    if key in cfg.separator:
        return f"separator.{key}"
    if cfg.get("attention") and key in cfg.attention:
        return f"attention.{key}"
    if key in cfg and key not in ("separator", "attention", "seq_len"):
        return key
    options = [k for k in cfg.separator if k != "_target_"]
    if cfg.get("attention"):
        options += [k for k in cfg.attention if not k.startswith("_")]
    options += [k for k in cfg if k not in ("separator", "attention", "seq_len")]
    raise LongsepError(f"separator={separator} has no option {key!r} (options: {sorted(options)})")


def _apply_overrides(cfg: DictConfig, separator: str, overrides: dict[str, Any]) -> None:
    """Set each override on the separator (or its attention, or a top-level key)."""
    with open_dict(cfg):
        for key, value in overrides.items():
            OmegaConf.update(cfg, _override_path(cfg, separator, key), value, merge=False)


def compose_network(
    separator: str = "umx_transformer",
    attention: str | None = None,
    seq_len: float = 30.0,
    **overrides: Any,
) -> DictConfig:
    """Compose ``conf/build.yaml`` for ``separator`` / ``attention`` with ``overrides``."""
    _check_option("separator", separator)
    if not is_no_attention(attention):
        _check_option("attention", attention)
        if not takes_attention(separator):
            raise _no_attention_error(separator, attention)
    hydra_overrides = [f"separator={separator}", f"seq_len={seq_len}"]
    if not is_no_attention(attention):
        hydra_overrides.append(f"attention={attention}")
    try:
        with _compose_context():
            cfg = compose("build", overrides=hydra_overrides)
    except HydraException as exc:
        raise LongsepError(f"cannot compose conf/build.yaml: {exc}") from exc
    _apply_overrides(cfg, separator, overrides)
    return cfg


def build_network(
    separator: str = "umx_transformer",
    attention: str | None = None,
    seq_len: float = 30.0,
    **overrides: Any,
) -> nn.Module:
    """Build ``conf/separator/<separator>.yaml`` with ``conf/attention/<attention>.yaml``.

    ``seq_len`` (seconds) sizes learned position tables; ``overrides`` set
    separator keys (``hidden_size=256``, ``nb_channels=1``, ...), options of the
    attention (``kv_stride=2``) or keys of ``conf/build.yaml`` (``bandwidth=None``,
    ``stft={...}``). Example::

        build_network("umx_transformer", "qkvg1D", seq_len=30)
    """
    return instantiate_network(compose_network(separator, attention, seq_len, **overrides))
