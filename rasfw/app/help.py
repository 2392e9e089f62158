"""`python -m rasfw --help`: every group with its options (plugins' included) and every key explained.

Each key is explained where it is defined: the comment beside it in its option's YAML file, else the
`Args:` entry of the class its `_target_` names; an option is described by its file's first comment line,
else its class's first docstring line.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from typing import Any

from omegaconf import OmegaConf

_KEY_LINE = re.compile(r"^([A-Za-z_][\w]*):\s*(.*?)\s*(?:#\s*(.*))?$")


def render_help(groups: Sequence[str], settings: Mapping[str, str], defaults: Mapping[str, Any], search_paths: Sequence[str]) -> str:
    """The help text of the main command.

    Args:
        groups: config groups, in the order to show them.
        settings: plain top-level keys and what each means.
        defaults: the composed default config (its chosen options and values).
        search_paths: the plugins' config folders (`pkg://<package>`), searched after rasfw's own.
    """
    lines = [
        "rasfw: Region-Adaptive Sampling for diffusion transformers.",
        "",
        "usage: python -m rasfw [group=option ...] [key=value ...]",
        "       python -m rasfw -m key=a,b [group=x,y ...]     (a sweep: one run per combination)",
        "       python -m rasfw [overrides] --cfg job           (print the composed config, run nothing)",
        "",
        *_group_lines(groups, defaults, search_paths),
        *_setting_lines(settings, defaults),
        "",
        "Outputs go to outputs/<date>/<time>/ (hydra.run.dir=... to choose); --hydra-help shows Hydra's own flags.",
    ]
    return "\n".join(lines)


def render_app_help(command: str, description: str, groups: Sequence[str], settings: Mapping[str, str],
                    defaults: Mapping[str, Any]) -> str:  # fmt: skip
    """The help text of a command with a config of its own (`python -m rasfw.app.bench`): only the groups its
    config's defaults list names, and its own keys.

    Args:
        command: how it is run, e.g. "python -m rasfw.app.bench".
        description: one line saying what it does.
        groups: the config groups its config uses.
        settings: its top-level keys and what each means.
        defaults: its composed config (chosen options and values).
    """
    lines = [
        f"{command}: {description}",
        "",
        f"usage: {command} [group=option ...] [key=value ...]",
        f"       {command} [overrides] --cfg job     (print the composed config, run nothing)",
        "",
        *(_group_lines(groups, defaults, []) if groups else []),
        *_setting_lines(settings, defaults),
        "",
        "Outputs go to outputs/<date>/<time>/ (hydra.run.dir=... to choose); --hydra-help shows Hydra's own flags.",
    ]
    return "\n".join(lines)


def _group_lines(groups: Sequence[str], defaults: Mapping[str, Any], search_paths: Sequence[str]) -> list[str]:
    """Each group with its options (the default starred), each option described with its keys."""
    folders = [resources.files("rasfw.conf")] + [_folder(path) for path in search_paths]
    lines = ["Groups (group=option; * marks the default). Each option's keys are set as group.key=value:"]
    for group in groups:
        options = _options(folders, group)
        chosen = defaults.get(group)
        lines.append("")
        lines.append(f"{group}: " + ", ".join(f"{name}*" if name == chosen else name for name in options))
        for name, text in options.items():
            lines.extend(_describe_option(name, text, group))
    return [*lines, ""]


def _setting_lines(settings: Mapping[str, str], defaults: Mapping[str, Any]) -> list[str]:
    """`Settings (key=value):` and a line per key: what it means and its default."""
    lines = ["Settings (key=value):"]
    width = max(len(key) for key in settings)
    for key, meaning in settings.items():
        lines.append(f"  {key:<{width}}  " + (f"{meaning} " if meaning else "") + f"(default {_value(defaults.get(key))})")
    return lines


def _folder(path: str):
    """The folder a `pkg://package.sub` search path points to."""
    return resources.files(path.removeprefix("pkg://").replace("/", "."))


def _options(folders: list, group: str) -> dict[str, str]:
    """Option name -> its YAML text, rasfw's own first, then the plugins'."""
    found: dict[str, str] = {}
    for folder in folders:
        sub = folder.joinpath(group)
        if sub.is_dir():
            for item in sorted(sub.iterdir(), key=lambda p: p.name):
                if item.name.endswith(".yaml"):
                    found.setdefault(item.name[: -len(".yaml")], item.read_text())
    return dict(sorted(found.items()))


def _describe_option(name: str, text: str, group: str) -> Iterator[str]:
    """The option's description line and one line per key: `group.key=default  meaning`."""
    data = OmegaConf.to_container(OmegaConf.create(text)) or {}
    comments = key_comments(text)
    cls = _target_class(data.get("_target_"), group)
    args = _arg_docs(cls) if cls is not None else {}
    header = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
    summary = header or ((inspect.getdoc(cls) or "").split("\n")[0] if cls is not None else "")
    yield f"  {name}: {summary}" if summary else f"  {name}"
    for key, value in data.items():
        if key == "_target_":
            continue  # the option's class
        meaning = comments.get(key) or args.get(key, "")
        yield f"      {group}.{key}={_value(value)}" + (f"  {meaning}" if meaning else "")


def key_comments(text: str) -> dict[str, str]:
    """`key -> comment` for each top-level `key: value  # comment` line of a YAML file's `text`, indented
    comment lines below it joined.

    Args:
        text: the YAML file's text.
    """
    found: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        match = _KEY_LINE.match(line)
        if match:
            key = match.group(1)
            if match.group(3):
                found[key] = match.group(3)
        elif key in found and line.startswith(" ") and line.strip().startswith("#"):
            found[key] += " " + line.strip().lstrip("#").strip()
    return found


def _arg_docs(cls: type) -> dict[str, str]:
    """`name -> first line` of each entry in the `Args:` section of `cls`'s docstring."""
    doc = inspect.getdoc(cls) or ""
    section = doc.split("Args:", 1)[1] if "Args:" in doc else ""
    found: dict[str, str] = {}
    for line in section.splitlines():
        if line and not line.startswith(" "):
            break  # the next section
        match = re.match(r"^    (\w+): (.*)$", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def _target_class(target: str | None, group: str) -> type | None:
    """The registered class a `_target_` names, or None (a typo shows up when a run composes it)."""
    from rasfw.registry import REGISTRY

    kind = {"model": "runner"}.get(group, group)
    try:
        return REGISTRY.by_target(kind, target) if target else None
    except ValueError:
        return None


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        text = str(value).replace("'", "")
        return text if len(text) <= 40 else f"<{len(value)} items; see --cfg job>"
    return str(value)
