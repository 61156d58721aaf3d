"""Typed, frozen recipe configs: shared dataclasses, recipe loading, overrides, JSON round trip.

A recipe is a Python file ``configs/<task>/<name>.py`` whose ``get_config(variant: str = "")``
returns a frozen :class:`Config` (or the stages of ``jaxspeech.train.stages``, whose
``load_recipe`` loads recipe files) for each name of its ``VARIANTS`` tuple, which is read
without importing the file to list the recipes (:func:`recipe_info`). :class:`Config` holds
the sections the trainer reads (optim, schedule, train); each task subclasses it with its own
typed sections (usually ``model``, ``data`` and ``eval``), e.g.
``jaxspeech.train.tasks.separation.SeparationConfig``. Every section is a frozen dataclass in
an importable module (the model configs beside their models, the rest in the task module), so
that :func:`to_json` can record its import path and :func:`from_json` rebuild it from
``WORKDIR/config.json`` alone.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import importlib.util
import json
import pathlib
import re
import subprocess
import types
import typing
from typing import Any

import jax.numpy as jnp

import jaxspeech
from jaxspeech.errors import ConfigError

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
#: Version of the config.json layout written by :func:`to_json`. 1 (unversioned): configs
#: before the model configs moved beside their models; 2: the current layout.
FORMAT_VERSION = 2


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimiser. ``name``: ``"adam"`` (L2 weight decay added to the gradient), ``"adamw"``
    (decoupled weight decay) or ``"sgd-nesterov"``. ``clip_norm``: clip gradients to this
    global L2 norm (``None``: no clipping)."""

    name: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    momentum: float = 0.9
    clip_norm: float | None = None


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate multiplier over steps. ``name``: ``"constant"``, ``"warmup_cosine"``
    (linear warm-up, then cosine to ``final_factor`` at the last step) or
    ``"warmup_exponential"`` (linear warm-up, then ``× decay_rate`` every ``decay_every``
    steps, floored at ``final_factor``).

    Reduce-on-plateau (Conv-TasNet recipes): when ``plateau_patience > 0`` the learning rate
    is further multiplied by ``plateau_factor`` whenever the validation metric has not improved
    for ``plateau_patience`` validations in a row.
    """

    name: str = "constant"
    warmup_steps: int = 0
    final_factor: float = 0.0
    decay_rate: float = 0.5
    decay_every: int = 1000
    plateau_patience: int = 0
    plateau_factor: float = 0.5


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Loop settings. ``batch_size`` is global (over all processes and devices)."""

    steps: int = 1000
    batch_size: int = 8
    checkpoint_every: int = 500
    eval_every: int = 500
    log_every: int = 50
    seed: int = 0
    keep_checkpoints: int = 3
    max_nonfinite_steps: int = 10
    compute_dtype: str = "float32"

    @property
    def dtype(self) -> Any:
        """The jnp compute dtype (params stay float32; tasks pass this as the modules'
        ``dtype`` and keep norms, losses and metrics in float32)."""
        return COMPUTE_DTYPES[self.compute_dtype]


@dataclasses.dataclass(frozen=True)
class Config:
    """A complete recipe. ``task``: a name in ``jaxspeech.train.tasks`` or ``"module:Class"``.

    Tasks subclass it with their typed sections (see the module docstring); on construction
    every section, here and nested, is checked against the type its field declares.
    """

    task: str
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self) -> None:
        _check_section_types(self, type(self).__name__)


def _section_types(hint: Any) -> tuple[type, ...]:
    """The dataclass types a field hint allows, or () when it is not a section."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    options = tuple(o for o in options if o is not type(None))
    if options and all(isinstance(o, type) and dataclasses.is_dataclass(o) for o in options):
        return options
    return ()


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _check_section_types(obj: Any, prefix: str) -> None:
    """Raises :class:`ConfigError` where a section of ``obj`` (recursively) is not of a type its
    field allows."""
    for name, hint in _field_types(type(obj)).items():
        allowed, value = _section_types(hint), getattr(obj, name)
        if not allowed or (value is None and type(None) in typing.get_args(hint)):
            continue
        key = f"{prefix}.{name}"
        if not isinstance(value, allowed):
            names = " or ".join(o.__name__ for o in allowed)
            raise ConfigError(f"{key} is a {type(value).__name__}; this field takes {names}")
        _check_section_types(value, key)


def validate(config: Config) -> None:
    """Raises :class:`ConfigError` for values the trainer cannot use."""
    train = config.train
    if train.compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(
            f"train.compute_dtype={train.compute_dtype!r}; use one of {sorted(COMPUTE_DTYPES)}"
        )
    for name in ("steps", "batch_size", "checkpoint_every", "eval_every", "log_every"):
        if getattr(train, name) < 1:
            raise ConfigError(f"train.{name}={getattr(train, name)}; it must be >= 1")
    if train.keep_checkpoints < 1 or train.max_nonfinite_steps < 1:
        raise ConfigError("train.keep_checkpoints and train.max_nonfinite_steps must be >= 1")


def recipe_module(path: str | pathlib.Path) -> types.ModuleType:
    """The recipe file ``path`` imported as a module (recipes are files, not a package).
    ``jaxspeech.train.stages.load_recipe`` calls its ``get_config``."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file {path} not found; pass --config configs/<task>/<x>.py")
    module_spec = importlib.util.spec_from_file_location(f"_jaxspeech_recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def recipe_info(path: str | pathlib.Path) -> tuple[str, tuple[str, ...] | None]:
    """``(summary, variants)`` of a recipe file, read from its source without importing it (so
    that listing recipes imports no optional package): the first line of its docstring as plain
    text, and its ``VARIANTS`` tuple (None when it declares none)."""
    tree = ast.parse(pathlib.Path(path).read_text(), str(path))
    summary = plain_text((ast.get_docstring(tree) or "").strip().split("\n")[0])
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "VARIANTS" for t in node.targets
        ):
            try:
                return summary, tuple(ast.literal_eval(node.value))
            except ValueError as err:
                raise ConfigError(f"{path}: VARIANTS must be a literal tuple of strings") from err
    return summary, None


def plain_text(text: str) -> str:
    """``text`` without reStructuredText markup (double backticks, roles such as ``:mod:``)."""
    return re.sub(r":\w+:`~?([^`]*)`", r"\1", text).replace("``", "")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def type_name(kind: Any) -> str:
    """A field type as written in a dataclass: ``int``, ``tuple[float, float] | None``."""
    if _is_union(kind):
        return " | ".join(type_name(a) for a in typing.get_args(kind))
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        return f"tuple[{', '.join('...' if a is ... else type_name(a) for a in args)}]"
    if kind is type(None):
        return "None"
    return getattr(kind, "__name__", str(kind))


def _parse_value(text: str, kind: Any, key: str) -> Any:
    """Parses the override ``text`` as a value of type ``kind`` (str, int, float, bool, tuple,
    Optional); raises :class:`ConfigError` naming ``key``, ``text`` and ``kind`` otherwise."""
    expected = f"{key}={text!r} is not {_a(type_name(kind))}"
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if _is_union(kind):
        if type(None) in args and text in ("None", "none", "null"):
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _parse_value(text, option, key)
            except ConfigError:
                continue
        raise ConfigError(expected)
    if kind is str or kind is Any:
        return text
    if kind is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{expected}; use true or false")
    if kind in (int, float):
        try:
            literal = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            literal = None
        if isinstance(literal, bool) or not isinstance(literal, int | float):
            raise ConfigError(expected)
        if kind is int and not float(literal).is_integer():
            raise ConfigError(expected)
        return kind(literal)
    if origin is tuple:
        return _parse_tuple(text, args, expected, key)
    raise ConfigError(f"{key}: overriding a field of type {type_name(kind)} is not supported")


def _parse_tuple(text: str, args: tuple, expected: str, key: str) -> tuple:
    """``a,b`` or ``(a, b)`` or ``[a, b]`` (one trailing comma allowed) as a tuple of ``args``
    (``(T, ...)``: any length)."""
    inner = text.strip()
    if inner and inner[0] in "([":
        closing = ")" if inner[0] == "(" else "]"
        if not inner.endswith(closing):
            raise ConfigError(f"{expected}: unbalanced brackets")
        inner = inner[1:-1]
    if any(c in inner for c in "()[]"):
        raise ConfigError(f"{expected}: unbalanced or nested brackets")
    items = [s.strip() for s in inner.split(",")]
    if items[-1] == "":
        items.pop()  # "()", or a trailing comma
    if "" in items:
        raise ConfigError(f"{expected}: an empty item")
    item_types = [args[0]] * len(items) if len(args) == 2 and args[1] is ... else list(args)
    if len(item_types) != len(items):
        raise ConfigError(f"{expected}: it has {len(items)} items, not {len(item_types)}")
    values = []
    for item, kind in zip(items, item_types, strict=True):
        try:
            values.append(_parse_value(item, kind, key))
        except ConfigError as err:
            raise ConfigError(f"{expected}: {item!r} is not {_a(type_name(kind))}") from err
    return tuple(values)


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _replace_path(obj: Any, path: list[str], text: str, prefix: str) -> Any:
    if not dataclasses.is_dataclass(obj):
        raise ConfigError(f"{prefix} is a value, not a section; it has no key {path[0]!r}")
    types_by_name = _field_types(type(obj))
    name = path[0]
    key = f"{prefix}.{name}" if prefix else name
    if name not in types_by_name:
        raise ConfigError(
            f"unknown config key {key!r}; valid keys at "
            f"{prefix or 'the top level'}: {', '.join(sorted(types_by_name))}"
        )
    current = getattr(obj, name)
    if len(path) > 1:
        value = _replace_path(current, path[1:], text, key)
    elif dataclasses.is_dataclass(current):
        raise ConfigError(f"{key} is a section; set one of its keys, e.g. {key}.<name>=value")
    else:
        value = _parse_value(text, types_by_name[name], key)
    return dataclasses.replace(obj, **{name: value})


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Returns ``config`` with each ``"a.b=value"`` applied, type-checked against the fields."""
    for override in overrides:
        dotted, sep, text = override.partition("=")
        if not sep or not dotted:
            raise ConfigError(f"override {override!r} must look like section.key=value")
        config = _replace_path(config, dotted.split("."), text, "")
    return config


def has_key(obj: Any, dotted: str) -> bool:
    """Whether ``dotted`` (``"model.tcn.norm"``) names a field of ``obj`` or of its sections."""
    for name in dotted.split("."):
        if not (dataclasses.is_dataclass(obj) and name in _field_types(type(obj))):
            return False
        obj = getattr(obj, name)
    return True


def config_keys(obj: Any, prefix: str = "") -> list[tuple[str, str, Any]]:
    """``(key, type name, value)`` of every field an override can set, sections expanded:
    ``("train.steps", "int", 2000)``."""
    keys = []
    for name, hint in _field_types(type(obj)).items():
        key, value = f"{prefix}{name}", getattr(obj, name)
        if dataclasses.is_dataclass(value):
            keys += config_keys(value, f"{key}.")
        else:
            keys.append((key, type_name(hint), value))
    return keys


def _class_path(cls: type) -> str:
    path = f"{cls.__module__}:{cls.__qualname__}"
    try:
        resolved = _import_class(path)
    except ConfigError:
        resolved = None
    if resolved is not cls:
        raise ConfigError(
            f"config class {cls.__qualname__} (module {cls.__module__}) cannot be re-imported; "
            "define config dataclasses in an importable module such as the task module"
        )
    return path


def _import_class(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"cannot import {path!r}: {err}") from err
    return obj


def _to_tree(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        fields = {f.name: _to_tree(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__class__": _class_path(type(value)), **fields}
    if isinstance(value, tuple | list):
        return [_to_tree(v) for v in value]
    return value


#: Fields renamed since format version 2 was introduced: ``(class name, old field)`` ->
#: ``(new field, new value from old value)``, so the workdirs written before still load.
RENAMED_FIELDS = {
    (name, "p_target"): ("p_targets", lambda p: tuple(dict.fromkeys((p, 0.01, 0.05))))
    for name in ("SpeakerEvalConfig", "IVectorEvalConfig")
} | {
    # The lip net's target was a frame-relative band IBM; the nets are unchanged, so such a
    # run still enhances, and its lips are scored against the band activity.
    ("AVModelConfig", "band_threshold"): ("band_range_db", lambda _: 40.0),
}


def _from_tree(tree: Any) -> Any:
    """Inverse of :func:`_to_tree` (configs hold tuples, never lists); renamed fields
    (:data:`RENAMED_FIELDS`) are read under their new names."""
    if isinstance(tree, dict) and "__class__" in tree:
        cls = _import_class(tree["__class__"])
        fields = {}
        for key, value in tree.items():
            if key == "__class__":
                continue
            renamed = RENAMED_FIELDS.get((cls.__name__, key))
            if renamed is not None:
                key, value = renamed[0], renamed[1](value)
            fields[key] = _from_tree(value)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ConfigError(
                f"{cls.__name__} has no field {', '.join(unknown)} (its fields: "
                f"{', '.join(sorted(known))}); this config.json was written by another version"
            )
        return cls(**fields)
    if isinstance(tree, list):
        return tuple(_from_tree(v) for v in tree)
    return tree


def to_json(config: Config) -> str:
    """Serialises the full typed config under its format version, with the jaxspeech version
    and git commit that wrote it (:func:`provenance`); dataclasses carry their ``module:Class``
    path."""
    return json.dumps(
        {"format_version": FORMAT_VERSION, **provenance(), "config": _to_tree(config)}, indent=2
    )


@functools.cache
def provenance() -> dict[str, str | None]:
    """``{"jaxspeech_version": ..., "git_commit": ...}``: the package version, and the commit
    of the package's git checkout (see :func:`git_commit`)."""
    package = pathlib.Path(jaxspeech.__file__).resolve().parent
    return {"jaxspeech_version": jaxspeech.__version__, "git_commit": git_commit(package.parent)}


def git_commit(checkout: pathlib.Path) -> str | None:
    """The commit checked out in ``checkout`` when it is the top level of a git work tree, with
    ``+dirty`` when tracked files have uncommitted changes; None otherwise (an installed
    package, no git)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(checkout), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()

    try:
        if pathlib.Path(git("rev-parse", "--show-toplevel")).resolve() != checkout.resolve():
            return None
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def from_json(text: str) -> Config:
    """Rebuilds the config written by :func:`to_json` of this format version.

    Raises :class:`ConfigError` for a config.json of another format version, such as the
    unversioned one of earlier jaxspeech versions (whose class paths no longer exist).
    """
    tree = json.loads(text)
    version = tree.get("format_version") if isinstance(tree, dict) else None
    if version is None:
        raise ConfigError(
            "this workdir was written by an earlier version of jaxspeech (its config.json has "
            f"no format version; this version reads format {FORMAT_VERSION}) and cannot be "
            "read; retrain in a new workdir, or use the jaxspeech version that trained it"
        )
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"this workdir's config.json has format version {version!r}, but this version of "
            f"jaxspeech reads format {FORMAT_VERSION}; use the jaxspeech version that trained "
            "it, or retrain in a new workdir"
        )
    return _from_tree(tree["config"])
