"""Pulumi's project and stack files, loaded as strictly as the Pulumi CLI loads them.

- YAML syntax: a plain scalar holding ": " (`description: jobs request aud: $X`) is a syntax error
  for every YAML 1.1/1.2 parser, Go's yaml included, so the CLI cannot load the project
  (sdk/go/common/encoding/marshal.go@0c8d867: "invalid YAML file: ..."); PyYAML refuses it too.
- Duplicate mapping keys: refused, as gopkg.in/yaml.v3 does (go-yaml/yaml decode.go, `uniqueKeys`:
  "mapping key ... already defined at line N"); PyYAML would silently keep the last one.
- Pulumi.yaml: validated, as `ValidateProject` does (sdk/go/common/workspace/loaders.go), against
  the rules of Pulumi's project schema (pulumi/pulumi sdk/go/common/workspace/project.json) that
  these projects touch, restated in PROJECT_SCHEMA below.
- Pulumi.<stack>.yaml: a mapping whose `config` is a mapping; a missing file is an empty stack
  (loaders.go, projectStackLoader.load: os.IsNotExist -> empty config).
- Written back as the CLI's marshaller writes it: the ProjectStack fields in struct order
  (secretsprovider, encryptedkey, encryptionsalt, config) and no comments (yaml.v2 Marshal keeps
  none; sdk/go/common/workspace/project.go, ProjectStack).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the lock
import yaml

_CONFIG_TYPE = {"enum": ["string", "integer", "boolean", "array"]}
# The project schema's rules for what these projects declare (pulumi/pulumi
# sdk/go/common/workspace/project.json): `name` and `runtime` required; `runtime` a non-empty
# string or {name, options} and nothing else; each `config` entry a bare value or a declaration
# {type, items, description, secret, default} with `items` required for arrays.
PROJECT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["name", "runtime"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": ["string", "null"]},
        "main": {"type": ["string", "null"]},
        "stackConfigDir": {"type": ["string", "null"]},
        "runtime": {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "options": {"type": "object"},
                    },
                    "additionalProperties": False,
                },
            ]
        },
        "config": {
            "type": ["object", "null"],
            "additionalProperties": {
                "oneOf": [
                    {"type": ["string", "integer", "boolean", "array"]},
                    {
                        "type": "object",
                        "required": ["type"],
                        "additionalProperties": False,
                        "properties": {
                            "type": _CONFIG_TYPE,
                            "items": {
                                "type": "object",
                                "required": ["type"],
                                "properties": {"type": _CONFIG_TYPE},
                            },
                            "description": {"type": "string"},
                            "secret": {"type": "boolean"},
                            "default": {},
                        },
                        "if": {"properties": {"type": {"const": "array"}}},
                        "then": {"required": ["items"]},
                    },
                ]
            },
        },
    },
}
STACK_FIELDS = ("secretsprovider", "encryptedkey", "encryptionsalt", "config", "environment")


class PulumiFileError(Exception):
    """A project or stack file the CLI would refuse: `path: line N: why`."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (yaml.v3 behaviour)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f'mapping key "{key}" already defined at line {seen[key]}',
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(path: Path) -> Any:
    """Parse `path` strictly; raise PulumiFileError naming the file and line."""
    text = path.read_text(encoding="utf-8-sig")  # the CLI strips a UTF-8 BOM (loaders.go)
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506  # a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f"line {mark.line + 1}: " if mark else ""
        raise PulumiFileError(f"{path}: invalid YAML file: {line}{err.problem}") from None


def load_project(directory: Path) -> dict[str, Any]:
    """`<directory>/Pulumi.yaml`, parsed and validated against Pulumi's project schema."""
    path = directory / "Pulumi.yaml"
    if not path.is_file():
        raise PulumiFileError(f"no Pulumi.yaml project file found in {directory.resolve()}")
    raw = load_yaml(path)
    errors = sorted(
        jsonschema.Draft202012Validator(PROJECT_SCHEMA).iter_errors(raw), key=lambda e: list(e.path)
    )
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
        raise PulumiFileError(f"{path}: project is invalid: {where}: {errors[0].message}")
    assert isinstance(raw, dict)
    return raw


def stack_path(directory: Path, stack: str) -> Path:
    return directory / f"Pulumi.{stack}.yaml"


def load_stack(directory: Path, stack: str) -> dict[str, Any]:
    """`Pulumi.<stack>.yaml` as the CLI reads it (absent: an empty stack)."""
    path = stack_path(directory, stack)
    if not path.is_file():
        return {"config": {}}
    raw = load_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PulumiFileError(f"{path}: expected a mapping at the top level")
    config = raw.get("config")
    if config is None:
        raw["config"] = {}
    elif not isinstance(config, dict):
        raise PulumiFileError(f"{path}: `config` must be a mapping")
    return raw


def save_stack(directory: Path, stack: str, data: dict[str, Any]) -> None:
    """Write the stack file as the CLI rewrites it (field order, sorted config, no comments)."""
    ordered: dict[str, Any] = {}
    for name in STACK_FIELDS:
        value = data.get(name)
        if name == "config" and value:
            ordered[name] = dict(sorted(value.items()))
        elif value:
            ordered[name] = value
    text = yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False)
    stack_path(directory, stack).write_text(text if ordered else "")


def all_pulumi_files(root: Path) -> list[Path]:
    """Every Pulumi.yaml and Pulumi.<stack>.yaml under `root` (virtualenvs and caches skipped)."""
    skip = {".venv", ".git", "node_modules", ".gitlab-ci-local", ".mypy_cache", ".ruff_cache"}
    found = []
    for path in sorted(root.rglob("Pulumi*.yaml")):
        if skip.intersection(path.relative_to(root).parts):
            continue
        if path.name == "Pulumi.yaml" or path.name.startswith("Pulumi."):
            found.append(path)
    return found


def check(path: Path) -> None:
    """Load one file strictly (a project or a stack file, by its name)."""
    if path.name == "Pulumi.yaml":
        load_project(path.parent)
    else:
        load_stack(path.parent, path.name.removeprefix("Pulumi.").removesuffix(".yaml"))
