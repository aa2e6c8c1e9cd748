"""The workflow config, checked before any job: the JSON schema (which fills in defaults),
whole numbers, keys that go together, the local data folder -- each failure a `ConfigError`
naming the key. `raft.study.preflight` then checks every job against its command's rules.
The Snakefile (workflow/rules/common.smk) calls `load`; tests call it too.
"""

from __future__ import annotations

import copy
import difflib
import os
import sys
from pathlib import Path

import jsonschema
import yaml

from raft.data.tasks import GLUE_TASKS
from raft.study import VARIANTS, ConfigError, preflight, resource_warnings

SCHEMA_HINT = "Keys, types and defaults: workflow/schemas/config.schema.yaml"
# the keys of a per-task / per-variant mapping (the schema's propertyNames, checked against these
# by tests/test_settings.py and tests/test_config_messages.py): what an unknown key's message lists
MAPPING_KEYS = {"per-task": ("default", *GLUE_TASKS), "per-variant": ("default", *VARIANTS)}


def key_path(path) -> str:
    """['glue', 'low_data', 'sizes', 0] -> 'glue.low_data.sizes[0]'."""
    parts = []
    for part in path:
        parts.append(f"[{part}]" if isinstance(part, int) else (f".{part}" if parts else str(part)))
    return "".join(parts) or "<top level>"


def _filling_validator(schema: dict):
    """Draft 2020-12, filling in each property's default, counting only ints as integers
    (JSON Schema counts 1.0 as an integer; the commands do not)."""
    base = jsonschema.Draft202012Validator

    def properties(validator, props, instance, schema_):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from base.VALIDATORS["properties"](validator, props, instance, schema_)

    strict = base.TYPE_CHECKER.redefine("integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool))
    return jsonschema.validators.extend(base, {"properties": properties}, type_checker=strict)(schema)


def _pick(err: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """The error to report. A value with alternative forms (oneOf: a number, or a mapping keyed by
    task or variant) fails in every form; report the failure of the form it has (a mapping's bad
    value or unknown key, not "is not of type 'number'"): among the context's errors, those of
    forms whose type fits; the deepest first, then an unknown key (propertyNames), then the rest."""
    while err.context:
        fits = [e for e in err.context if not _wrong_type(e)]
        err = min(fits or err.context,
                  key=lambda e: (-len(e.absolute_path), "propertyNames" not in e.relative_schema_path))
    return err


def _wrong_type(err: jsonschema.ValidationError) -> bool:
    """The value is not of this alternative's type (also: of none of a nested oneOf's types)."""
    if err.relative_path:
        return False
    if err.validator == "type":
        return True
    return err.validator in ("oneOf", "anyOf") and bool(err.context) and all(map(_wrong_type, err.context))


def _unknown_key(key: str, allowed) -> str:
    """An unknown key of a per-task / per-variant mapping: the key, close names, the allowed ones."""
    allowed = list(allowed)
    kind = next((k for k, names in MAPPING_KEYS.items() if set(names) == set(allowed)), None)
    if kind is not None:
        allowed = list(MAPPING_KEYS[kind])
    close = difflib.get_close_matches(str(key), allowed, n=2, cutoff=0.6)
    guess = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    what = f"a {kind} mapping's keys are" if kind else "allowed keys are"
    return f"unknown key {key!r}{guess}; {what} {', '.join(allowed)}"


def _message(err: jsonschema.ValidationError) -> str:
    best = _pick(err)
    where = key_path(list(best.absolute_path) or list(err.absolute_path))
    value = best.instance
    if "propertyNames" in best.relative_schema_path and best.validator == "enum":
        return f"invalid configuration value at '{where}': {_unknown_key(value, best.validator_value)}. {SCHEMA_HINT}"
    if isinstance(value, float) and value.is_integer():
        return f"invalid configuration value at '{where}': {value} is not a whole number; write {int(value)}"
    hint = ""
    if isinstance(value, str):
        try:
            float(value)
            hint = (" (YAML reads numbers like 1e-3 as text: write 1.0e-3, or use a --configfile "
                    "instead of --config for numbers and lists)")
        except ValueError:
            pass
    if best.validator == "required" and "'default'" in best.message:
        hint = " (a per-task mapping needs a default: the value of every task it does not name)"
    return f"invalid configuration value at '{where}': {best.message}{hint}. {SCHEMA_HINT}"


def validate(cfg: dict, schema_path) -> None:
    """Schema validation with defaults filled in place; a failure names the key. Of several
    failures, the most relevant by jsonschema's ranking (`best_match`'s), then, inside a oneOf, the
    failure of the form the value has (`_pick`, not `best_match`'s descent)."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = list(_filling_validator(schema).iter_errors(cfg))
    if errors:
        raise ConfigError(_message(max(errors, key=jsonschema.exceptions.relevance)))


def resolve_data_dir(cfg: dict) -> str | None:
    """config data_dir, else $RAFT_DATA_DIR, else None (Hub). A given folder must exist."""
    value, origin = cfg.get("data_dir"), "data_dir"
    if not value:
        value, origin = os.environ.get("RAFT_DATA_DIR", ""), "data_dir (from $RAFT_DATA_DIR)"
    if not value:
        return None
    path = Path(os.path.expanduser(str(value)))
    if not path.is_dir():
        raise ConfigError(
            f"invalid configuration value at '{origin}': local data folder {str(path)!r} does not exist. "
            "Point data_dir (or $RAFT_DATA_DIR) at a folder with glue/, squad/, corpus/, vocab/ "
            "subfolders, or set data_dir: null and unset RAFT_DATA_DIR to use the Hugging Face Hub.")
    return str(path.resolve())


def _bad(key: str, why: str) -> ConfigError:
    return ConfigError(f"invalid configuration value at '{key}': {why}")


def check_structure(cfg: dict, notebook_dir) -> None:
    """Keys that go together, files a key names, notebook templates."""
    efficient = cfg["glue"]["efficient"]
    for key in ("tasks", "sizes", "seeds"):
        others = [k for k in ("tasks", "sizes", "seeds") if k != key]
        if efficient[key] and not all(efficient[k] for k in others):
            raise _bad("glue.efficient", f"'{key}' is set but {' / '.join(others)} are empty; give all three or none")
    for section in ("glue", "squad"):
        low = cfg[section]["low_data"]
        if bool(low["sizes"]) != bool(low["seeds"]):
            raise _bad(f"{section}.low_data", "give both sizes and seeds, or neither")
    corpus = cfg["corpus"]
    if corpus["vocab_file"] and corpus["vocab_size"]:
        raise _bad("corpus.vocab_file", "give vocab_file or vocab_size, not both")
    if corpus["vocab_file"] and not Path(corpus["vocab_file"]).is_file():
        raise _bad("corpus.vocab_file", f"{corpus['vocab_file']!r} is not a file")
    if corpus["path"] and corpus["source"] != "hub" and not Path(corpus["path"]).exists():
        raise _bad("corpus.path", f"{corpus['path']!r} does not exist")
    for name in cfg["notebooks"] or []:
        if not (Path(notebook_dir) / f"{name}.ipynb").is_file():
            raise _bad("notebooks", f"no template notebooks/{name}.ipynb")


def merge_files(files) -> dict:
    """YAML config files merged in order as Snakemake merges ``--configfile`` overlays:
    mappings key by key, any other value (lists too) replaced."""

    def merge(base: dict, over: dict) -> dict:
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = copy.deepcopy(value)
        return base

    cfg: dict = {}
    for f in files:
        merge(cfg, yaml.safe_load(Path(f).read_text()) or {})
    return cfg


def load(cfg: dict, schema_path, notebook_dir) -> str | None:
    """Validate ``cfg`` in place (defaults filled) and check every job; returns the data folder.
    What the config asks for but this machine will do otherwise (`raft.study.resource_warnings`)
    is said once on stderr, before any job."""
    validate(cfg, schema_path)
    data_dir = resolve_data_dir(cfg)
    check_structure(cfg, notebook_dir)
    preflight(cfg, data_dir)
    for line in resource_warnings(cfg):
        print(f"warning: {line}", file=sys.stderr)
    return data_dir
