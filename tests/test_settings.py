"""raft.settings: the schema and the settings dataclasses agree, flags come from the
dataclasses, and a new field flows to the command line and the result record by itself."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import yaml

from raft import settings, study
from test_study import config_of
from test_workflow import CONFIG, REPO

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
CLASSES = [settings.Model, settings.Rational, settings.Corpus, settings.Pretrain, settings.Finetune,
           settings.SquadFinetune]
JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _resolve(node: dict) -> dict:
    """Follow $ref; for a oneOf (a number or a per-task / per-variant mapping) take the scalar."""
    while True:
        if "$ref" in node:
            node = {**SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}
        elif "oneOf" in node:
            node = {**node["oneOf"][0], **{k: v for k, v in node.items() if k != "oneOf"}}
        else:
            return node


def _schema_type(node: dict) -> tuple[set, bool]:
    node = _resolve(node)
    if "enum" in node:
        kinds = {type(v) for v in node["enum"] if v is not None}
        return {JSON_TYPES[k] for k in kinds}, None in node["enum"]
    types = node["type"] if isinstance(node["type"], list) else [node["type"]]
    return {t for t in types if t != "null"}, "null" in types


def _field_type(cls, f) -> tuple[set, bool]:
    hint = dataclasses.fields(cls)  # noqa: F841  (kept simple: use the resolved annotation)
    scalar = settings._scalar_type(cls, f.name)
    nullable = f.default is None or "None" in str(f.type)
    return {JSON_TYPES[scalar]}, nullable


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_schema_and_settings_agree(cls):
    props = SCHEMA["properties"][cls.SECTION]["properties"]
    names = {f.name for f in dataclasses.fields(cls)}
    structural = set(study.STRUCTURE) if cls.SECTION in ("glue", "squad") else set()
    assert set(props) - structural == names, f"schema {cls.SECTION} keys and {cls.__name__} fields differ"
    for f in dataclasses.fields(cls):
        node = props[f.name]
        assert node.get("default", "<none>") == f.default, f"{cls.SECTION}.{f.name}: default"
        stypes, snull = _schema_type(node)
        ftypes, fnull = _field_type(cls, f)
        assert ftypes <= stypes, f"{cls.SECTION}.{f.name}: type {ftypes} vs schema {stypes}"
        assert snull == fnull, f"{cls.SECTION}.{f.name}: null allowed in one but not the other"
        # a null value is left off the command line, so the command must default to None too
        assert not snull or f.default is None, f"{cls.SECTION}.{f.name}: may be null but defaults to {f.default}"


def test_flags_come_from_the_dataclasses():
    parser = argparse.ArgumentParser()
    for cls in (settings.Model, settings.Rational, settings.Pretrain):
        settings.add_flags(parser, cls)
    args = parser.parse_args(["--rational-lr", "0.01", "--max-position-embeddings", "512", "--seed", "3"])
    assert settings.from_args(settings.Rational, args).lr == 0.01
    assert settings.from_args(settings.Model, args).max_position_embeddings == 512
    assert settings.from_args(settings.Pretrain, args) == settings.Pretrain(seed=3)


def test_model_options_reach_the_pretrained_model():
    """--deepnorm / --no-embedding-layernorm / --weight-init: flags -> settings.Model -> the model `raft
    pretrain` builds, its config (so the saved folder) included; without them, stock BERT."""
    from types import SimpleNamespace

    import torch

    from raft.train.pretrain import build_model

    parser = argparse.ArgumentParser()
    settings.add_flags(parser, settings.Model)
    data = SimpleNamespace(tokenizer=[None] * 40, pad_id=0)
    for argv, expected in ((["--deepnorm", "--no-embedding-layernorm", "--weight-init", "authors"],
                            (True, False, "authors")), ([], (False, True, "bert"))):
        args = parser.parse_args(argv + ["--num-layers", "1", "--max-position-embeddings", "16"])
        model = settings.from_args(settings.Model, args)
        assert (model.deepnorm, model.embedding_layernorm, model.weight_init) == expected
        config, net = build_model("raft", model, settings.Rational(), data, torch.device("cpu"))
        assert (config.deepnorm, config.embedding_layernorm, config.weight_init) == expected
        assert (type(net.bert.embeddings.LayerNorm).__name__ == "Identity") == (not expected[1])
        assert (type(net.bert.encoder.layer[0].output).__name__ == "DeepNormOutput") == expected[0]


def test_identity_marks():
    assert "save_steps" not in settings.identity(settings.Pretrain())
    assert settings.identity(settings.Pretrain())["lr"] == 7e-4
    assert set(settings.identity(settings.Rational())) == {f.name for f in dataclasses.fields(settings.Rational)}


def test_a_new_field_reaches_flag_command_line_and_record(monkeypatch):
    """Adding a field to a settings dataclass is all it takes (bar the schema entry)."""
    extended = dataclasses.make_dataclass(
        "Extended", [("label_smoothing", float, settings.setting(0.0, "label smoothing"))],
        bases=(settings.Finetune,), frozen=True)
    parser = argparse.ArgumentParser()
    settings.add_flags(parser, extended)
    assert settings.from_args(extended, parser.parse_args(["--label-smoothing", "0.1"])).label_smoothing == 0.1
    monkeypatch.setitem(study.RUN_SETTINGS, "glue", extended)
    cfg = config_of(CONFIG / "smoke.yaml")
    cfg["glue"]["label_smoothing"] = 0.2
    assert study.values(study.finetune_settings(cfg, "glue", "rte", "raft", 16))["label_smoothing"] == 0.2
    assert settings.as_record(extended(label_smoothing=0.2))["label_smoothing"] == 0.2


def test_schema_task_names_are_the_registry():
    from raft.data.tasks import GLUE_TASKS

    assert SCHEMA["$defs"]["glue_task"]["enum"] == list(GLUE_TASKS)
    mapping = SCHEMA["$defs"]["per_task_search_number"]["oneOf"][1]
    assert mapping["propertyNames"]["enum"] == ["default", *GLUE_TASKS]
