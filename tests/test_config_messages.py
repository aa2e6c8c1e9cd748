"""raft.config: what a config error says. A per-task / per-variant mapping with a misspelt key
names the key and lists the allowed ones (from the task registry and `raft.study.VARIANTS`); a
mapping's own failure is reported, not "is not of type 'number'" of the plain-number form; a
multi-GPU request on a machine without CUDA is said once, before any job."""

from __future__ import annotations

import pytest
import yaml
from test_study import PAPER, SCHEMA, config_of

from raft import config, study
from raft.data.tasks import GLUE_TASKS
from raft.study import ConfigError

TASKS = ", ".join(GLUE_TASKS)
HINT = "Keys, types and defaults: workflow/schemas/config.schema.yaml"

MISSPELT = {
    # changes on paper.yaml: (key named, the message after it)
    "per_task_alone": ({"glue.rational_lr": {"sts2": 1.0e-3}},
                       "glue.rational_lr", "unknown key 'sts2' (did you mean 'stsb' or 'sst2'?); "
                                           f"a per-task mapping's keys are default, {TASKS}"),
    "per_task_with_default": ({"glue.rational_lr": {"default": 1.0e-3, "mrcp": 1.0e-4}},
                              "glue.rational_lr", "unknown key 'mrcp' (did you mean 'mrpc'?); "
                                                  f"a per-task mapping's keys are default, {TASKS}"),
    "per_task_efficient": ({"glue.efficient.rational_lr": {"default": 1.0e-3, "SST-2": 1.0e-4}},
                           "glue.efficient.rational_lr", "unknown key 'SST-2'; "
                                                         f"a per-task mapping's keys are default, {TASKS}"),
    "per_variant_lr": ({"glue.efficient.lr": {"bret": 1.0e-2, "raft": 5.0e-3}},
                       "glue.efficient.lr", "unknown key 'bret' (did you mean 'bert'?); "
                                            "a per-variant mapping's keys are default, bert, raft"),
    "per_variant_int": ({"squad.low_data.doc_stride": {"faft": 64}},
                        "squad.low_data.doc_stride", "unknown key 'faft' (did you mean 'raft'?); "
                                                     "a per-variant mapping's keys are default, bert, raft"),
    "task_in_a_per_variant_mapping": ({"squad.max_seq_length": {"default": 384, "rte": 128}},
                                      "squad.max_seq_length", "unknown key 'rte'; "
                                                              "a per-variant mapping's keys are default, bert, raft"),
}


@pytest.mark.parametrize("name", sorted(MISSPELT))
def test_a_misspelt_mapping_key_is_named_with_the_allowed_keys(name):
    changes, key, words = MISSPELT[name]
    with pytest.raises(ConfigError) as err:
        config_of(PAPER, **changes)
    assert str(err.value) == f"invalid configuration value at '{key}': {words}. {HINT}"


def test_the_listed_keys_are_the_schemas():
    """What the message lists is what the schema accepts (tests/test_settings.py ties the schema's
    task names to the registry)."""
    defs = yaml.safe_load(SCHEMA.read_text())["$defs"]
    assert defs["per_task_search_number"]["oneOf"][1]["propertyNames"]["enum"] == list(config.MAPPING_KEYS["per-task"])
    for name in ("per_variant_search_number", "per_variant_int"):
        assert defs[name]["oneOf"][1]["propertyNames"]["enum"] == list(config.MAPPING_KEYS["per-variant"])
    assert config.MAPPING_KEYS["per-variant"] == ("default", *study.VARIANTS)


@pytest.mark.parametrize("changes, key, words", [
    # a mapping's bad value: the key inside it, not the plain-number form's complaint
    ({"glue.rational_lr": {"default": 1.0e-3, "sst2": -1}}, "glue.rational_lr.sst2",
     "-1 is less than or equal to the minimum of 0"),
    ({"squad.max_seq_length": {"bert": 384, "raft": "128"}}, "squad.max_seq_length.raft",
     "'128' is not of type 'integer'"),
    # a valid task without the default a per-task mapping needs
    ({"glue.rational_lr": {"sst2": 5.0e-3}}, "glue.rational_lr",
     "'default' is a required property (a per-task mapping needs a default: the value of every task it does "
     "not name)"),
    # neither form: the plain number's message, with the YAML hint
    ({"glue.rational_lr": "1e-3"}, "glue.rational_lr", "'1e-3' is not of type 'number' (YAML reads numbers"),
    # a per-task mapping in a low-data / full-data layer; a size that is neither N nor "full"
    ({"glue.full_data.rational_lr": {"default": 1.0e-3, "qnli": 0}}, "glue.full_data.rational_lr.qnli",
     "0 is less than or equal to the minimum of 0"),
    ({"glue.efficient.sizes": [100, "ful"]}, "glue.efficient.sizes[1]", "'ful' is not one of ['full']"),
])
def test_a_mapping_reports_its_own_failure(changes, key, words):
    with pytest.raises(ConfigError) as err:
        config_of(PAPER, **changes)
    assert str(err.value).startswith(f"invalid configuration value at '{key}': {words}")
    assert "is not valid under any of the given schemas" not in str(err.value)


def _load(cfg):
    return config.load(cfg, SCHEMA, SCHEMA.parents[2] / "notebooks")


def test_multi_gpu_pretraining_without_cuda_is_said_once_before_any_job(capsys, monkeypatch):
    monkeypatch.delenv("RAFT_DATA_DIR", raising=False)
    monkeypatch.setattr(study, "_cuda_here", lambda: False)
    from test_workflow import merged_config

    cfg = merged_config(PAPER)
    cfg["resources"]["pretrain"]["gpu"] = 2
    assert _load(cfg) is None
    err = capsys.readouterr().err
    assert err == ("warning: resources.pretrain.gpu: 2 but no CUDA GPU here: pretraining jobs that run on this "
                   "machine (not on a cluster's GPU nodes) train on the CPU, as one process under the default "
                   "profile's gpu=1 cap, else under torchrun as one CPU process (gloo) per gpu that --resources "
                   "grants, up to 2; resources.pretrain.gpu: 0 runs one CPU process with all the job's threads\n")
    monkeypatch.setattr(study, "_cuda_here", lambda: True)  # a GPU machine: nothing to say
    assert _load(merged_config(PAPER)) is None
    assert capsys.readouterr().err == ""
