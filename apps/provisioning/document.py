"""Reading a config file: YAML with the line of every value, validated against the published schema.

Every error names the file, the line and the field (``gateway.yaml:12: organizations[0].teams[1].rpm_limit:
...``), so one found in review or CI points at the line to fix. Values of secret fields are never echoed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import jsonschema
import yaml

from apps.provisioning.schema import CONFIG_SCHEMA, SECRET_FIELDS, SECRET_REF_PATTERN

Path = tuple  # (key or index, ...) from the document's root

_VALIDATOR = jsonschema.Draft202012Validator(CONFIG_SCHEMA)


class _Loader(yaml.SafeLoader):
    """SafeLoader without implicit timestamps: ``api_version: 2024-06-01`` is the text Azure wants, not a date."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def path_label(path: Path) -> str:
    """``("organizations", 0, "teams", 1, "rpm_limit")`` -> ``organizations[0].teams[1].rpm_limit``."""
    label = ""
    for part in path:
        label += f"[{part}]" if isinstance(part, int) else (f".{part}" if label else str(part))
    return label or "(top level)"


class ConfigError(Exception):
    """One or more problems, each with its file, line and field."""

    def __init__(self, problems: list[tuple[str, int | None, str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{file}:{line or '?'}: {field}: {message}" for file, line, field, message in self.problems]


@dataclass
class Document:
    """The parsed file and where each of its values came from."""

    filename: str
    data: dict
    lines: dict[Path, int] = field(default_factory=dict)

    def line(self, path: Path) -> int | None:
        """The line of ``path``, or of its nearest ancestor present in the file (a missing field: its object)."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)

    def error(self, path: Path, message: str) -> ConfigError:
        return ConfigError([(self.filename, self.line(path), path_label(path), message)])


def _to_python(loader: _Loader, node: yaml.Node, path: Path, lines: dict, filename: str):
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # YAML merge keys (<<: *defaults)
        result = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise ConfigError([(filename, key_node.start_mark.line + 1, path_label(path), "keys must be text.")])
            key = str(key)
            if key in result:
                raise ConfigError(
                    [
                        (
                            filename,
                            key_node.start_mark.line + 1,
                            path_label((*path, key)),
                            "appears twice in this object.",
                        )
                    ]
                )
            lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = _to_python(loader, value_node, (*path, key), lines, filename)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(loader, item, (*path, i), lines, filename) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def document_parse(text: str, *, filename: str) -> Document:
    """Parse YAML keeping line numbers; a syntax error names its line too."""
    loader = _Loader(text)
    lines: dict[Path, int] = {}
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError([(filename, 1, "(top level)", "the file is empty.")])
        data = _to_python(loader, node, (), lines, filename)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise ConfigError([(filename, line, "(syntax)", str(getattr(error, "problem", None) or error))]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError([(filename, 1, "(top level)", "must be a mapping with version: 1.")])
    return Document(filename=filename, data=data, lines=lines)


def _schema_message(error: jsonschema.ValidationError) -> str:
    field_name = error.absolute_path[-1] if error.absolute_path else None
    if field_name in SECRET_FIELDS and error.validator in ("pattern", "type"):
        # Never repeat the value: it is most likely the very secret that must not be in the file.
        return "an inline secret is not allowed: write a reference, os.environ/NAME, and set NAME where you apply."
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown field(s)")
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    return error.message


def document_validate(document: Document) -> None:
    """Every schema violation at once, in file order."""
    problems = []
    for error in _VALIDATOR.iter_errors(document.data):
        path = tuple(error.absolute_path)
        problems.append((document.filename, document.line(path), path_label(path), _schema_message(error)))
    problems.sort(key=lambda p: (p[1] or 0, p[2]))
    if problems:
        raise ConfigError(problems)
    _check_unique(document)


def _check_unique(document: Document) -> None:
    """Names that identify objects must be unique where they identify them."""
    problems = []

    def unique(items: list, key: str, base: Path, what: str) -> None:
        seen: dict = {}
        for i, item in enumerate(items):
            value = item.get(key)
            if value in seen:
                problems.append(
                    (
                        document.filename,
                        document.line((*base, i, key)),
                        path_label((*base, i, key)),
                        f"{what} {value!r} appears twice (first at line {seen[value]}).",
                    )
                )
            else:
                seen[value] = document.line((*base, i, key))

    data = document.data
    unique(data.get("users", []), "username", ("users",), "user")
    unique(data.get("organizations", []), "name", ("organizations",), "organization")
    unique(data.get("deployments", []), "name", ("deployments",), "deployment")
    unique(data.get("model_groups", []), "model_name", ("model_groups",), "model group")
    unique(data.get("access_groups", []), "name", ("access_groups",), "access group")
    for o, org in enumerate(data.get("organizations", [])):
        base = ("organizations", o)
        unique(org.get("teams", []), "name", (*base, "teams"), "team")
        unique(org.get("customers", []), "external_id", (*base, "customers"), "customer")
        unique(org.get("deployments", []), "name", (*base, "deployments"), "deployment")
        unique(org.get("access_groups", []), "name", (*base, "access_groups"), "access group")
        unique(org.get("members", []), "user", (*base, "members"), "member")
        for t, team in enumerate(org.get("teams", [])):
            unique(team.get("members", []), "user", (*base, "teams", t, "members"), "member")
    if problems:
        raise ConfigError(problems)


def secret_ref_name(reference: str) -> str:
    """``os.environ/OPENAI_API_KEY`` -> ``OPENAI_API_KEY`` (the schema has already checked the shape)."""
    if not re.match(SECRET_REF_PATTERN, reference):
        raise ValueError("not a secret reference")
    return reference.split("/", 1)[1]


def document_load(text: str, *, filename: str) -> Document:
    document = document_parse(text, filename=filename)
    document_validate(document)
    return document
