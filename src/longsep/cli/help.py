"""``longsep <command> --help``: a command's options with their defaults and one-line
descriptions, read from the configs it composes (the yaml comments are the descriptions),
and the person-friendly form of ``longsep separate`` (positional inputs, short flags)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from longsep.config import conf_dir

_KEY = re.compile(r"^(?P<key>[A-Za-z_][\w]*):(?P<value>[^#]*?)\s*(?:#\s?(?P<doc>.*))?$")
_DEFAULT = re.compile(r"^\s*-\s*(?P<group>[\w/]+)(?P<here>@_here_)?:\s*(?P<choice>[\w.]+|null)")


def _options(path: Path) -> list[tuple[str, str, str]]:
    """``(key, default, description)`` of the top-level keys of one yaml file; a comment on
    the lines below a key continues its description."""
    rows: list[list[str]] = []
    for line in path.read_text().splitlines():
        match = _KEY.match(line)
        if match and match["key"] not in ("defaults", "hydra"):
            rows.append([match["key"], match["value"].strip(), (match["doc"] or "").strip()])
        elif rows and line.startswith(" ") and line.strip().startswith("#"):
            rows[-1][2] = f"{rows[-1][2]} {line.strip().lstrip('#').strip()}".strip()
        elif line and not line.startswith((" ", "#")):
            rows.append(["", "", ""])  # a block we do not list ends the continuation
    return [(k, v, d) for k, v, d in rows if k]


def describe(config_name: str) -> str:
    """The options of ``conf/<config_name>.yaml``: config groups (with their choices), the
    settings of groups composed at the top level, then its own keys."""
    conf = conf_dir()
    primary = conf / f"{config_name}.yaml"
    groups, rows = [], []
    for line in primary.read_text().splitlines():
        match = _DEFAULT.match(line)
        if not match or match["group"].startswith(("override", "hydra")):
            continue
        group = match["group"]
        if match["here"]:
            rows += _options(conf / group / f"{match['choice']}.yaml")
        elif (conf / group).is_dir():
            choices = sorted(p.stem for p in (conf / group).glob("*.yaml"))
            groups.append((group, match["choice"], ", ".join(choices)))
    rows += _options(primary)
    width = max([len(k) for k, _, _ in rows] + [len(g) for g, _, _ in groups] + [8])
    lines = []
    if groups:
        lines.append("config groups (group=choice):")
        lines += [f"  {g:<{width}}  {c:<10}  one of: {all_}" for g, c, all_ in groups]
    lines.append("options (key=value, default shown):")
    lines += [f"  {k:<{width}}  {v:<10}  {d}".rstrip() for k, v, d in rows]
    return "\n".join(lines)


def _quote(value: str) -> str:
    """A Hydra override value quoted so that spaces, commas and brackets stay literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _is_override(token: str) -> bool:
    key = token.split("=", 1)[0]
    return "=" in token and re.fullmatch(r"[+~]{0,2}[\w./@-]+", key) is not None


def separate_overrides(argv: list[str]) -> list[str]:
    """Hydra overrides for ``longsep separate`` typed as a person would:
    ``longsep separate song.mp3 other.flac -o out/ -t vocals`` (``key=value`` arguments,
    the Hydra form, pass through unchanged). ``--help`` prints the options and exits."""
    parser = argparse.ArgumentParser(
        prog="longsep separate",
        description="Separate audio files into stems (default model: umx_small_rendered, shipped).",
        epilog=describe("separate") + "\n\nAny option above may also be given as key=value.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="*", help="audio files, folders or quoted globs")
    parser.add_argument("-o", "--out-dir", help="folder for the stems (default: separated)")
    parser.add_argument("-m", "--model", help="model store, checkpoint, Open-Unmix dir or name")
    parser.add_argument("-t", "--targets", help="comma-separated targets, e.g. vocals,drums")
    parser.add_argument("-c", "--codec", help="wav | flac | ogg | mp3")
    parser.add_argument("-b", "--bitrate", help="for ogg / mp3, e.g. 320k")
    parser.add_argument("-d", "--device", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--stems", help="2: vocals + accompaniment")
    passthrough = [a for a in argv if _is_override(a) and not Path(a).exists()]
    args, hydra_flags = parser.parse_known_args([a for a in argv if a not in passthrough])
    overrides = []
    if args.inputs:
        overrides.append(f"input=[{','.join(_quote(i) for i in args.inputs)}]")
    for key, value in (
        ("out_dir", args.out_dir),
        ("model", args.model),
        ("codec", args.codec),
        ("bitrate", args.bitrate),
        ("device", args.device),
        ("stems", args.stems),
    ):
        if value is not None:
            overrides.append(f"{key}={_quote(value) if key in ('out_dir', 'model') else value}")
    if args.targets:
        overrides.append(f"targets=[{','.join(t.strip() for t in args.targets.split(','))}]")
    return [*hydra_flags, *overrides, *passthrough]
