"""Snakemake workflow catalog conventions ("standardized usage"): config/README.md describes
every config file and every key group of the schema (read live, so the page cannot drift from
it), .snakemake-workflow-catalog.yml has the catalog's usage section, and the workflow is
`snakefmt`-formatted and `snakemake --lint` clean, as the catalog checks. The report
(`snakemake --report`) is built in test_workflow_e2e.py."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import _find_data_dir
from test_workflow import CONFIG, REPO, output_of, run_snakemake, snakemake_cmd

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CONFIG_README = CONFIG / "README.md"
CATALOG = REPO / ".snakemake-workflow-catalog.yml"


# ==========================================================================================
# config/README.md
# ==========================================================================================


def _resolve(schema: dict, node: dict) -> dict:
    """A schema node merged with the $defs entry its $ref names (one level, as the schema uses)."""
    ref = node.get("$ref")
    if not ref:
        return node
    assert ref.startswith("#/$defs/"), ref
    return {**schema["$defs"][ref.split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}


def key_groups(schema: dict) -> list[str]:
    """Dotted paths of every mapping of keys in the schema below the top level:
    model, glue, glue.low_data, glue.efficient, resources.pretrain, ..."""
    groups: list[str] = []

    def walk(props: dict, prefix: str) -> None:
        for name, node in props.items():
            node = _resolve(schema, node)
            if node.get("type") == "object" or "properties" in node:
                path = f"{prefix}{name}"
                groups.append(path)
                walk(node.get("properties", {}), f"{path}.")

    walk(schema["properties"], "")
    return groups


@pytest.fixture(scope="module")
def schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


@pytest.fixture(scope="module")
def config_readme() -> str:
    assert CONFIG_README.is_file(), "config/README.md is missing (the catalog requires it)"
    return CONFIG_README.read_text()


def test_key_groups_found(schema):
    """The walk sees the nesting the README documents (guards the test itself)."""
    groups = key_groups(schema)
    for path in ("model", "glue", "glue.low_data", "glue.full_data", "glue.efficient",
                 "squad.low_data", "resources", "resources.pretrain"):
        assert path in groups, path


def test_config_readme_mentions_every_top_level_key(schema, config_readme):
    missing = [key for key in schema["properties"] if f"`{key}`" not in config_readme]
    assert not missing, (
        f"config/README.md does not mention the top-level key(s) {missing} of "
        "workflow/schemas/config.schema.yaml: add a line each (what it controls, from the "
        "schema's description)")


def test_config_readme_mentions_every_key_group(schema, config_readme):
    """Each group as `glue.low_data` (nested) or `model` (top level), in backticks."""
    missing = [path for path in key_groups(schema) if f"`{path}`" not in config_readme]
    assert not missing, (
        f"config/README.md does not mention the key group(s) {missing} of "
        "workflow/schemas/config.schema.yaml: add a line or two each")


def test_config_readme_describes_every_config_file(config_readme):
    files = sorted(p.name for p in CONFIG.glob("*.yaml"))
    assert "config.yaml" in files
    missing = [name for name in files if f"`{name}`" not in config_readme]
    assert not missing, f"config/README.md does not describe {missing}"


def test_config_readme_defers_defaults_to_the_schema(config_readme):
    assert "workflow/schemas/config.schema.yaml" in config_readme
    assert "--configfile" in config_readme  # how overlays combine


# ==========================================================================================
# .snakemake-workflow-catalog.yml
# ==========================================================================================


DEPLOYMENT_METHODS = {"conda", "apptainer", "apptainer+conda", "singularity", "singularity+conda"}


def test_catalog_file():
    """The catalog's documented format: usage: {mandatory-flags: {desc, flags},
    software-stack-deployment: {conda, apptainer, ...}, report}."""
    assert CATALOG.is_file(), ".snakemake-workflow-catalog.yml is missing"
    settings = yaml.safe_load(CATALOG.read_text())
    usage = settings["usage"]
    assert set(usage) == {"mandatory-flags", "software-stack-deployment", "report"}, set(usage)

    flags = usage["mandatory-flags"]
    assert isinstance(flags["desc"], str) and flags["desc"].strip()
    assert isinstance(flags["flags"], (str, list)), flags["flags"]

    deployment = usage["software-stack-deployment"]
    assert set(deployment) <= DEPLOYMENT_METHODS, set(deployment) - DEPLOYMENT_METHODS
    assert all(isinstance(v, bool) for v in deployment.values()), deployment
    assert any(deployment.values()), "the catalog needs at least one deployment method"
    if deployment.get("conda"):
        assert (REPO / "envs" / "raft.yaml").is_file()

    # the catalog reads usage.report (not a key of software-stack-deployment)
    assert usage["report"] is True


def test_catalog_flags_are_snakemake_options():
    """Any flag the catalog page would add to its commands is one snakemake accepts."""
    flags = yaml.safe_load(CATALOG.read_text())["usage"]["mandatory-flags"]["flags"]
    tokens = flags.split() if isinstance(flags, str) else [t for f in flags for t in f.split()]
    options = [t.split("=")[0] for t in tokens if t.startswith("--")]
    if not options:
        return
    help_text = subprocess.run(snakemake_cmd() + ["--help"], capture_output=True, text=True).stdout
    for option in options:
        assert option in help_text, option


# ==========================================================================================
# snakefmt and snakemake --lint (what the catalog runs on every listed workflow)
# ==========================================================================================


def snakefmt_cmd() -> list[str]:
    exe = shutil.which("snakefmt")
    if exe:
        return [exe]
    if importlib.util.find_spec("snakefmt") is not None:
        return [sys.executable, "-m", "snakefmt"]
    if sys.version_info < (3, 11):
        pytest.skip("snakefmt 2.x needs Python >= 3.11")
    pytest.fail("snakefmt is not installed: pip install -e '.[test]'")


def test_snakefmt_check():
    """`snakefmt --check Snakefile workflow` (settings: [tool.snakefmt] in pyproject.toml)."""
    cmd = snakefmt_cmd()
    proc = subprocess.run(cmd + ["--check", "Snakefile", "workflow"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        diff = subprocess.run(cmd + ["--compact-diff", "Snakefile", "workflow"], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        pytest.fail(f"snakefmt --check failed (rc {proc.returncode}); run `snakefmt Snakefile "
                    f"workflow` to fix:\n{output_of(proc)}\n{diff.stdout[-8000:]}")


def test_lint_reports_nothing(tmp_path):
    """`snakemake --lint` on the smoke config: no lint for any Snakefile or rule. Asks for the
    JSON report; snakemake 9.27 still prints text (its CLI ignores the format), so both are
    read."""
    args = ["--lint", "json", "--configfile", CONFIG / "smoke.yaml"]
    data_dir = _find_data_dir()
    if data_dir is not None:
        args += ["--config", f"data_dir={data_dir}"]
    proc = run_snakemake(*args, workdir=tmp_path, timeout=300)
    stdout = proc.stdout.strip()
    if stdout.startswith("{"):
        lints = json.loads(stdout)
        assert lints == {"snakefiles": [], "rules": []}, json.dumps(lints, indent=2)
    assert "Lints for" not in proc.stdout + proc.stderr, output_of(proc)
    assert proc.returncode == 0, output_of(proc)
