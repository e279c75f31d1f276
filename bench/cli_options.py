"""``bench run``'s options as typer parameters, from their one declaration in :mod:`bench.config`.

``bench run``, ``bench scan``, ``bench report`` and ``bench suite`` take their options from
here, so a flag, its help and its default are written once.
"""

from __future__ import annotations

import inspect
from enum import Enum
from typing import Annotated

import typer


def typer_parameters(only: tuple[str, ...] | None = None) -> list[inspect.Parameter]:
    """Options derived from their one declaration in :mod:`bench.config` (all of ``bench
    run``'s, or the fields in ``only``): result-changing options first, then where output goes."""
    import typing

    from bench.config import RunConfig, SearchConfig, declared_options

    hints = {**typing.get_type_hints(RunConfig), **typing.get_type_hints(SearchConfig)}
    params = []
    for name, opt, default in sorted(declared_options(), key=lambda item: not item[1].changes_results):
        if only is not None and name not in only:
            continue
        kind = opt.cli_type or hints[name]
        if opt.choices is not None:
            kind = Enum(name.title().replace("_", ""), {c: c for c in opt.choices}, type=str)
            default = kind(default)
        elif isinstance(default, list):
            default = ",".join(default)
        decls = [f"{opt.flag}/{opt.off_flag}"] if opt.off_flag else [opt.flag]
        info = typer.Option(*decls, help=opt.help, show_default=opt.show_default or True)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[kind, info]))
    return params


def with_options(func, names: tuple[str, ...]) -> None:
    """Give ``func``'s keyword-only parameters ``names`` their declared flag, help and default."""
    signature = inspect.signature(func, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name not in names]
    func.__signature__ = signature.replace(parameters=[*own, *typer_parameters(names)])


def explicit_options(ctx: typer.Context) -> dict:
    """Config fields the user set on the command line (or by environment), with values."""
    given = {}
    for param, value in ctx.params.items():
        source = ctx.get_parameter_source(param)
        # by name: typer may bring its own copy of click's ParameterSource enum
        if getattr(source, "name", None) in ("COMMANDLINE", "ENVIRONMENT"):
            given[param] = value.value if isinstance(value, Enum) else value
    return given


def suite_flags() -> list[inspect.Parameter]:
    """``bench suite``'s own options (beside ``bench run``'s)."""
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[
        kind, typer.Option(*flags, help=text)]) for name, default, kind, flags, text in (
        ("demo", False, bool, ("--demo",), "Run the demo suite: four synthetic datasets of graded difficulty, "
                                           "three backbones (a few minutes on a laptop CPU)."),
        ("resume", False, bool, ("--resume",), "Continue the suite --name: finished datasets, backbones and trials are "
                                           "kept."),
        ("rope", 0.01, float, ("--rope",), "Region of practical equivalence: differences of the objective up to this "
                                           "size count as a tie (Bayesian signed-rank test, wins/ties/losses)."),
        ("export", True, bool, ("--export/--no-export",), "Export each dataset's recommended model."))]
