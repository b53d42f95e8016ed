"""Module specs: what a module version declares about itself in its `module.toml`.

A module version is a file tree plus this spec. A `module.toml` looks like::

    name = "web"                 # optional; a module name
    version = "1.2.0"            # optional; a PEP 440 version
    description = "Front web server"
    extends = "docker >=24"      # the parent module, optionally with a version range
    file_spec = '''
    + /etc/nginx/***
    - *
    '''                          # rsync filter rules, one per line (or a list of lines)
    mask = ["/etc/nginx/secrets/*"]
    package_spec = ["nginx (>= 1.22)", "ca-certificates"]

    [dependency_spec]            # module name -> PEP 440 version range ("" or "*": any)
    certs = ">=1.2,<2"

`packages` and `dependencies` are accepted as older names of `package_spec` and
`dependency_spec` (specs stored before the rename use them); giving both spellings is an error.
The same keys can come as API fields instead (see `module_from_mapping`).

Module names match `MODULE_NAME_PATTERN`; module versions and ranges follow PEP 440; package
relations follow Debian (see `powernode.modules.packages`); `file_spec` and `mask` are parsed as
filter rules here, so a bad rule is refused at import, not when a template is composed. Every
parse error is an `Invalid` that says what is wrong and how to fix it.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from powernode.errors import Invalid
from powernode.modules.filters import FilterRules
from powernode.modules.packages import PackageRelation, parse_package_relation

MODULE_NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,98}[a-z0-9])?$"
_MODULE_NAME = re.compile(MODULE_NAME_PATTERN)
_REQUIREMENT = re.compile(r"^\s*(?P<name>[^\s<>=!~,]+)\s*(?P<range>.*?)\s*$")
ANY_VERSION = ("", "*")


def check_module_name(name: str) -> str:
    """Return `name` if it is a valid module name; raise Invalid otherwise."""
    if not _MODULE_NAME.match(name):
        raise Invalid(
            f"{name!r} is not a valid module name: use 1 to 100 lower case letters, digits, "
            "'.', '_' and '-', starting and ending with a letter or digit (e.g. 'web-proxy')",
            name=name,
        )
    return name


def parse_version(text: str) -> Version:
    """Parse a PEP 440 module version such as `1.0`, `24.0.7` or `2.1.0rc1`."""
    try:
        return Version(text)
    except InvalidVersion:
        raise Invalid(
            f"{text!r} is not a valid version: use a PEP 440 version such as '1.0', '24.0.7' "
            "or '2.1.0rc1'",
            version=text,
        ) from None


def version_key(text: str) -> str:
    """The text every PEP 440-equal spelling of the version `text` shares: `1.1`, `1.1.0` and
    `0!1.1.0` all give `1.1`. The database keeps it unique per module."""
    version = parse_version(text)
    release = list(version.release)
    while len(release) > 1 and release[-1] == 0:  # PEP 440 pads releases with zeros to compare
        release.pop()
    key = ".".join(str(part) for part in release)
    if version.epoch:
        key = f"{version.epoch}!{key}"
    if version.pre is not None:
        key += f"{version.pre[0]}{version.pre[1]}"
    if version.post is not None:
        key += f".post{version.post}"
    if version.dev is not None:
        key += f".dev{version.dev}"
    if version.local is not None:
        key += f"+{version.local}"
    return key


def parse_specifier(text: str) -> SpecifierSet:
    """Parse a PEP 440 version range such as `>=1.2,<2`; `""` and `"*"` mean any version."""
    stripped = text.strip()
    if stripped in ANY_VERSION:
        return SpecifierSet()
    try:
        return SpecifierSet(stripped)
    except InvalidSpecifier:
        pass
    hint = "write comparisons separated by commas, e.g. '>=1.2,<2', or '*' for any version"
    try:
        Version(stripped)
    except InvalidVersion:
        pass
    else:
        hint = f"write '=={stripped}' for exactly that version or '>={stripped}' for it or newer"
    raise Invalid(f"{text!r} is not a valid version range: {hint}", range=text)


@dataclass(frozen=True)
class ModuleRequirement:
    """A module name and the range of its versions that are acceptable (empty: any)."""

    name: str
    specifier: SpecifierSet

    def __str__(self) -> str:
        return f"{self.name} {self.specifier}" if str(self.specifier) else self.name


def parse_requirement(text: str) -> ModuleRequirement:
    """Parse a module name optionally followed by a range: `docker` or `docker >=24`."""
    match = _REQUIREMENT.match(text)
    if match is None:
        raise Invalid(
            f"{text!r} does not name a module: write a module name, optionally followed by a "
            "version range, e.g. 'docker' or 'docker >=24'"
        )
    name = check_module_name(match["name"])
    return ModuleRequirement(name, parse_specifier(match["range"]))


def _value_error(error: Invalid) -> ValueError:
    # pydantic reports ValueErrors raised by validators with their location; Invalid would escape.
    return ValueError(error.detail)


OLD_KEY_NAMES = {"package_spec": "packages", "dependency_spec": "dependencies"}
"""Keys of module.toml renamed to the issue's names; the old ones remain accepted."""

STORED = {"stored": True}
"""Validation context for specs read back from the database: they were checked at import, so
their filter rules are not parsed again (a preview validates every version's spec)."""


def _rule_problem(text: str, source: str) -> str | None:
    """Why `text` is not valid filter rules (naming the line), or None when it is."""
    try:
        FilterRules.parse(text, source=source)
    except Invalid as error:
        return error.detail
    return None


def _stored(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get("stored"))


class ModuleSpec(BaseModel):
    """What a module version declares: its files, masks, packages, dependencies and parent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    file_spec: str = ""
    """rsync filter rules, one per line, ending with a newline."""
    mask: list[str] = []
    """Patterns, each used as the rule `- PATTERN` against the modules below."""
    package_spec: list[str] = Field(
        default=[], validation_alias=AliasChoices("package_spec", "packages")
    )
    """Debian package relations, one package each, normalized (`nginx (>= 1.22)`)."""
    dependency_spec: dict[str, str] = Field(
        default={}, validation_alias=AliasChoices("dependency_spec", "dependencies")
    )
    """Module name -> PEP 440 range as written; `""` means any version."""
    extends: str | None = None
    """The parent module, optionally with a range (`docker >=24`)."""

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: object) -> object:
        if isinstance(data, Mapping):
            for key, old in OLD_KEY_NAMES.items():
                if key in data and old in data:
                    raise ValueError(
                        f"keys '{key}' and '{old}' (its older name) are both given; keep "
                        f"'{key}' only"
                    )
        return data

    @field_validator("file_spec", mode="before")
    @classmethod
    def _join_file_spec(cls, value: object) -> object:
        if isinstance(value, list):
            for number, line in enumerate(value, start=1):
                if not isinstance(line, str):
                    raise ValueError(f"rule {number} is {line!r}, not a string")
                if "\n" in line:
                    raise ValueError(f"rule {number} spans several lines; write one rule per item")
            value = "\n".join(value)
        if isinstance(value, str) and value and not value.endswith("\n"):
            value += "\n"
        return value

    @field_validator("file_spec")
    @classmethod
    def _parse_file_spec(cls, value: str, info: ValidationInfo) -> str:
        if not _stored(info) and (problem := _rule_problem(value, "file_spec")):
            raise ValueError(problem.removeprefix("file_spec "))
        return value

    @field_validator("mask")
    @classmethod
    def _check_mask(cls, value: list[str], info: ValidationInfo) -> list[str]:
        for number, pattern in enumerate(value, start=1):
            # rsync ends a rule at CR, LF or NUL, so a pattern holding one would silently be cut.
            if not pattern.strip() or any(c in pattern for c in "\n\r\x00"):
                raise ValueError(
                    f"pattern {number} ({pattern!r}) must be one non-empty line without NUL, "
                    "e.g. '/etc/*.key'"
                )
            if _stored(info):
                continue
            # Composition turns each pattern into the rule `- PATTERN` (see compose.py).
            if problem := _rule_problem(f"- {pattern}", "mask"):
                shown = pattern if len(pattern) <= 60 else pattern[:57] + "..."
                raise ValueError(
                    f"pattern {number} ({shown!r}) is not a valid pattern: "
                    + problem.removeprefix("mask line 1: ")
                )
        return value

    @field_validator("package_spec")
    @classmethod
    def _check_packages(cls, value: list[str]) -> list[str]:
        normalized = []
        for number, text in enumerate(value, start=1):
            try:
                normalized.append(str(parse_package_relation(text)))
            except Invalid as error:
                raise ValueError(f"entry {number}: {error.detail}") from None
        return normalized

    @field_validator("dependency_spec")
    @classmethod
    def _check_dependencies(cls, value: dict[str, str]) -> dict[str, str]:
        normalized = {}
        for name, text in value.items():
            try:
                check_module_name(name)
                parse_specifier(text)
            except Invalid as error:
                raise ValueError(f"dependency {name!r}: {error.detail}") from None
            normalized[name] = "" if text.strip() in ANY_VERSION else text.strip()
        return normalized

    @field_validator("extends")
    @classmethod
    def _check_extends(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(parse_requirement(value))
        except Invalid as error:
            raise _value_error(error) from None

    @property
    def parent(self) -> ModuleRequirement | None:
        """The module this one extends, with the acceptable range of its versions."""
        return None if self.extends is None else parse_requirement(self.extends)

    @property
    def depends_on(self) -> list[ModuleRequirement]:
        """The dependencies in declared order, each with its acceptable range."""
        return [
            ModuleRequirement(name, parse_specifier(text))
            for name, text in self.dependency_spec.items()
        ]

    @property
    def package_relations(self) -> list[PackageRelation]:
        """The packages, parsed."""
        return [parse_package_relation(text) for text in self.package_spec]

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> ModuleSpec:
        """A spec as recorded at import (either key spelling), without re-parsing its rules."""
        return cls.model_validate(data, context=STORED)


_TOP_LEVEL_KEYS = ("name", "version")
_TOML_POSITION = re.compile(r"\s*\((?:at line (?P<line>\d+), column (?P<column>\d+)|.*)\)$")


def known_keys() -> list[str]:
    """Every key a `module.toml` may contain (older names in parentheses)."""
    return [
        f"{key} (or {OLD_KEY_NAMES[key]})" if key in OLD_KEY_NAMES else key
        for key in (*_TOP_LEVEL_KEYS, *ModuleSpec.model_fields)
    ]


def load_module_toml(path: Path) -> tuple[str | None, str | None, ModuleSpec]:
    """Read `module.toml`: the optional `name` and `version` and the spec; raise Invalid."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise Invalid(f"{path}: cannot read the module file: {error}", file=str(path)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise _toml_error(path, error) from None
    return module_from_mapping(data, source=str(path))


def module_from_json(text: str, *, source: str) -> tuple[str | None, str | None, ModuleSpec]:
    """Validate a JSON object holding module.toml's keys (the import API's `spec` field)."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise Invalid(
            f"{source} is not valid JSON ({error}); give an object such as "
            '{"file_spec": ["+ /etc/***", "- *"], "package_spec": ["nginx"]}',
            file=source,
        ) from None
    if not isinstance(data, dict):
        raise Invalid(
            f"{source} must be a JSON object with module.toml's keys, not {type(data).__name__}",
            file=source,
        )
    return module_from_mapping(data, source=source)


def module_from_mapping(
    data: Mapping[str, Any], *, source: str
) -> tuple[str | None, str | None, ModuleSpec]:
    """Validate already-parsed `module.toml` data; `source` names it in error messages."""
    spec_data = dict(data)
    name = spec_data.pop("name", None)
    version = spec_data.pop("version", None)
    problems: list[tuple[str, str]] = []
    if name is not None:
        if not isinstance(name, str):
            problems.append(("name", f'must be a string, e.g. name = "web" (got {name!r})'))
        elif problem := _detail(check_module_name, name):
            problems.append(("name", problem))
    if version is not None:
        if not isinstance(version, str):
            problems.append(
                ("version", f'must be a string, e.g. version = "1.0" (got {version!r})')
            )
        elif problem := _detail(parse_version, version):
            problems.append(("version", problem))
    spec: ModuleSpec | None = None
    try:
        spec = ModuleSpec.model_validate(spec_data)
    except ValidationError as error:
        problems.extend(_describe(error))
    if problems or spec is None:
        described = "; ".join(
            f"key '{key}': {problem}" if key else problem for key, problem in problems
        )
        raise Invalid(
            f"{source}: {described}",
            file=source,
            errors=[{"key": key, "problem": problem} for key, problem in problems],
        )
    return name, version, spec


def _detail(check: Callable[[str], object], value: str) -> str:
    try:
        check(value)
    except Invalid as error:
        return error.detail
    return ""


def _describe(error: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for item in error.errors(include_url=False):
        key = _key(item["loc"])
        if item["type"] == "extra_forbidden":
            problem = "unknown key; known keys are " + ", ".join(known_keys())
        elif item["type"] == "value_error":
            problem = str(item.get("ctx", {}).get("error", item["msg"]))
        else:
            problem = f"{item['msg']} (got {item['input']!r})"
        problems.append((key, problem))
    return problems


def _key(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif part == "[key]":
            key += " (the name)"
        else:
            key += f".{part}" if key else part
    return key


def _toml_error(path: Path, error: tomllib.TOMLDecodeError) -> Invalid:
    message = str(error)
    match = _TOML_POSITION.search(message)
    problem = message[: match.start()] if match else message
    if match and match["line"]:
        where = f"line {match['line']}, column {match['column']}"
        extra: dict[str, Any] = {"line": int(match["line"]), "column": int(match["column"])}
    else:
        where = "the end of the file"
        extra = {}
    return Invalid(
        f"{path}: TOML syntax error at {where}: {problem}; fix the syntax (see https://toml.io)",
        file=str(path),
        **extra,
    )
