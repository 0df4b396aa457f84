"""Each registered method's options as ``fewshot train`` flags, read from its config dataclass.

Every field of a method's ``Config`` becomes ``--field-name`` (booleans also get
``--no-field-name``), listed by ``fewshot train --help`` under the method's name.
Methods that share an option (the MAML family's inner loop) share the flag. Only
flags given on the command line are passed on, so the config's own defaults hold
otherwise, and a flag the chosen method does not have is refused.
"""
from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, fields
from typing import Any

from engine.errors import FewShotError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_method_options(parser: argparse.ArgumentParser) -> None:
    from engine.methods.registry import METHODS

    added: set[str] = set()
    for name, cls in sorted(METHODS.items()):
        config_fields = [f for f in fields(cls.Config) if f.name not in added]
        if not config_fields:
            continue
        sharing = sorted(other for other, c in METHODS.items() if other != name
                         and {f.name for f in config_fields} <= {g.name for g in fields(c.Config)})
        title = f"{name} options" + (f" (also of {', '.join(sharing)})" if sharing else "")
        group = parser.add_argument_group(title, cls.description or None)
        hints = typing.get_type_hints(cls.Config)
        for f in config_fields:
            added.add(f.name)
            kind = _base_type(hints[f.name])
            default = None if f.default is MISSING else f.default
            help_text = f.metadata.get("help", "")
            if default is not None:
                help_text = f"{help_text} (default: {default})" if help_text else f"default: {default}"
            kwargs: dict[str, Any] = {"dest": f"method_{f.name}", "default": argparse.SUPPRESS, "help": help_text}
            if kind is bool:
                group.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kwargs)
            else:
                group.add_argument(_flag(f.name), type=kind, choices=f.metadata.get("choices"),
                                   metavar=None if f.metadata.get("choices") else f.name.upper(), **kwargs)


def method_options(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The options given on the command line for ``method``; one it does not have is a FewShotError."""
    from engine.methods.registry import method_class

    own = {f.name for f in fields(method_class(method).Config)}
    given = {k[len("method_"):]: v for k, v in vars(args).items() if k.startswith("method_")}
    foreign = sorted(set(given) - own)
    if foreign:
        flags = ", ".join(_flag(n) for n in foreign)
        raise FewShotError(f"{flags} {'is not an option' if len(foreign) == 1 else 'are not options'} of "
                           f"--method {method}; see 'fewshot train --help' for its options")
    return given
