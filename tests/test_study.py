"""raft.study: the runs and settings a config gives, and the pre-flight check of every job
(in process, on configs completed by the workflow's own schema; tests/test_workflow_paper.py
checks the same through `snakemake -n`)."""

from __future__ import annotations

import copy
import shlex

import pytest
import yaml
from raft import checks, settings, study
from raft.config import validate
from raft.study import ConfigError, preflight
from test_workflow import CONFIG, REPO, merged_config

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def config_of(*files, **changes) -> dict:
    """config.yaml + overlays + nested changes ({"squad.doc_stride": 200}), schema defaults filled."""
    cfg = merged_config(*files)
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    validate(cfg, SCHEMA)
    return cfg


PAPER = CONFIG / "paper.yaml"


@pytest.fixture(scope="module")
def paper():
    return config_of(PAPER)


def flags(cfg, name, task, variant, n):
    return study.values(study.finetune_settings(cfg, name, task, variant, n))


# ------------------------------------------------------------------------------ settings
def test_paper_glue_settings_as_the_authors(paper):
    low = flags(paper, "glue", "rte", "raft", 100)
    assert (low["epochs"], low["patience"], low["lr"], low["batch_size"]) == (20, 10, 5e-5, 32)
    assert (low["weight_decay"], low["adam_eps"], low["precision"]) == (0.1, 1e-6, "fp32")
    for t in paper["glue"]["tasks"]:  # the low-data RAF lr: searched over the paper's grid
        assert study.search_grid(paper, "glue", t, "raft", 100) == [{"rational_lr": v} for v in (5e-4, 1e-3, 5e-3)]
        assert study.search_grid(paper, "glue", t, "bert", 100) == [{}]
    full_lr = {t: flags(paper, "glue", t, "raft", "full")["rational_lr"] for t in paper["glue"]["tasks"]}
    assert full_lr == {"cola": 5e-4, "sst2": 1e-3, "mrpc": 1e-4, "stsb": 1e-3, "qqp": 5e-4, "mnli": 5e-4,
                       "qnli": 1e-4, "rte": 5e-4}
    assert study.setting(paper, "glue", "rational_lr", task="qnli", variant="raft", n="full") == (
        1e-4, "glue.full_data.rational_lr.qnli")
    full = flags(paper, "glue", "rte", "bert", "full")
    assert (full["epochs"], full["patience"]) == (10, 10)


def test_paper_efficient_and_squad_settings(paper):
    bert, raft = (flags(paper, "glue_efficient", "rte", v, 100) for v in ("bert", "raft"))
    assert (bert["lr"], raft["lr"], raft["rational_lr"]) == (1e-2, 5e-3, 1e-3)
    assert (raft["epochs"], raft["patience"]) == (30, 20)
    bert_full, raft_full = (flags(paper, "glue_efficient", "mnli", v, "full") for v in ("bert", "raft"))
    assert (bert_full["lr"], raft_full["lr"], raft_full["rational_lr"]) == (5e-3, 1e-2, 5e-4)
    assert (raft_full["epochs"], raft_full["patience"]) == (6, 10)
    assert study.setting(paper, "glue_efficient", "lr", task="mnli", variant="bert", n="full") == (
        5e-3, "glue.efficient.full_data.lr.bert")
    eff = {(n, s) for t, v, n, s in study.runs(paper, "glue_efficient") if (t, v) == ("rte", "raft")}
    assert {s for n, s in eff if n == "full"} == {2022, 202206, 20220602, 2259, 5309, 49}
    assert len(eff) == 10 + 6
    assert study.mode(paper, "glue_efficient", "bert") == "bias_head"
    assert study.mode(paper, "glue_efficient", "raft") == "raf_head"
    sq = flags(paper, "squad", "squad", "raft", "full")
    assert (sq["max_seq_length"], sq["doc_stride"], sq["adam_eps"], sq["precision"]) == (384, 128, 1e-8, "fp32")
    assert sq["patience"] >= sq["epochs"] == 10  # no early stopping, as the authors' run_squad.py
    assert study.mode(paper, "squad", "raft") == "frozen_rafs" and study.mode(paper, "squad", "bert") == "full"
    seeds = {(n, s) for _, v, n, s in study.runs(paper, "squad") if v == "raft"}
    assert len(seeds) == 3 * 10 + 6
    assert {s for n, s in seeds if n == "full"} == {2022, 2259, 5309, 202206, 20220602, 49}


def test_paper_pretraining_settings(paper):
    raft = study.values(study.pretrain_settings(paper, "raft"))
    assert raft["max_position_embeddings"] == 512 and raft["rational_init"] == "gelu_paper"
    assert (raft["batch_size"], raft["max_steps"], raft["lr"]) == (4096, 23000, 7e-4)
    assert raft["output_bias"] == "zero"
    bert = study.pretrain_settings(paper, "bert")
    assert not any(k.startswith("rational_") for k in bert)


def test_authors_overlay_model_and_pretraining_settings():
    """config/paper_authors.yaml: the authors' BERT variant for both variants, fp16 pretraining;
    paper.yaml alone: stock BERT."""
    cfg = config_of(PAPER, CONFIG / "paper_authors.yaml")
    for variant in ("bert", "raft"):
        got = study.values(study.pretrain_settings(cfg, variant))
        assert (got["deepnorm"], got["embedding_layernorm"], got["weight_init"], got["precision"]) == (
            True, False, "authors", "fp16")
        line = study.cli_args(got)
        assert "--deepnorm " in line and "--no-embedding-layernorm " in line and "--weight-init authors " in line
        stock = study.cli_args(study.values(study.pretrain_settings(config_of(PAPER), variant)))
        assert "deepnorm" not in stock and "embedding-layernorm" not in stock and "--weight-init bert " in stock
    assert flags(cfg, "squad", "squad", "raft", 100)["lowercase"] is False
    assert "--no-lowercase" in study.cli_args(flags(cfg, "squad", "squad", "bert", "full"))
    assert "lowercase" not in study.cli_args(flags(config_of(PAPER), "squad", "squad", "bert", "full"))
    assert flags(cfg, "glue", "rte", "raft", 100)["precision"] == "fp32"  # fine-tuning stays fp32


def test_triviaqa_window_flags():
    """zeroshot.triviaqa_window -> `raft zeroshot` flags with --override-window (TriviaQA only);
    config/paper_authors.yaml: the authors' 384 for both models; null: nothing (the run's own)."""
    cfg = config_of(PAPER, CONFIG / "paper_authors.yaml")
    for variant in ("bert", "raft"):
        assert study.zeroshot_args(cfg, "triviaqa", variant) == (
            "--max-seq-length 384 --doc-stride 240 --override-window")
        assert study.zeroshot_args(cfg, "snli", variant) == ""
        assert study.zeroshot_args(config_of(PAPER), "triviaqa", variant) == ""
    per_variant = config_of(PAPER, **{"zeroshot.triviaqa_window": {"max_seq_length": {"default": 384, "raft": 256}}})
    assert study.zeroshot_window(per_variant, "raft") == {
        "max_seq_length": (256, "zeroshot.triviaqa_window.max_seq_length.raft")}
    assert study.zeroshot_args(per_variant, "triviaqa", "bert") == "--max-seq-length 384 --override-window"
    with pytest.raises(ConfigError, match="zeroshot.triviaqa_window"):  # the schema: the two window keys, non-empty
        config_of(PAPER, **{"zeroshot.triviaqa_window": {"max_query_length": 32}})
    with pytest.raises(ConfigError, match="zeroshot.triviaqa_window"):
        config_of(PAPER, **{"zeroshot.triviaqa_window": {}})


def test_cli_args_writes_a_boolean_only_off_its_default():
    """False is left off (the default of most flags), True too for a setting that defaults to True
    (`settings.true_by_default`), whose false is --no-x."""
    assert study.cli_args({"compile": True, "deepnorm": False, "embedding_layernorm": True, "lr": 0.1}) == (
        "--compile --lr 0.1")
    assert study.cli_args({"compile": False, "embedding_layernorm": False, "lowercase": False}) == (
        "--no-embedding-layernorm --no-lowercase")
    assert settings.true_by_default() == {"embedding_layernorm", "lowercase"}


def test_authors_squad_windows_per_variant():
    cfg = config_of(PAPER, CONFIG / "paper_authors.yaml")
    got = {(v, n): (f["max_seq_length"], f["doc_stride"])
           for v in ("bert", "raft") for n in (100, "full") for f in [flags(cfg, "squad", "squad", v, n)]}
    assert got == {("bert", 100): (128, 0), ("raft", 100): (128, 0),
                   ("bert", "full"): (384, 240), ("raft", "full"): (128, 0)}
    _, key = study.setting(cfg, "squad", "doc_stride", task="squad", variant="bert", n="full")
    assert key == "squad.full_data.doc_stride.bert"
    preflight(cfg, None)  # every window fits the 512 positions and its stride


def test_a_new_section_key_becomes_a_flag(paper):
    """A key added to a fine-tuning section reaches the command line with no other change."""
    cfg = copy.deepcopy(paper)
    cfg["glue"]["warmup_ratio"] = 0.06
    assert flags(cfg, "glue", "rte", "bert", 100)["warmup_ratio"] == 0.06


def _flag(cfg, name, task, variant, n, flag="--lr") -> str:
    """The value of ``flag`` on the run's command line, as the workflow writes it."""
    words = shlex.split(study.cli_args(flags(cfg, name, task, variant, n)))
    return words[words.index(flag) + 1]


def test_per_variant_lr_reaches_each_variants_command_line():
    """`lr: {bert: x, raft: y}` in glue and squad (README's example), resolved as glue.efficient.lr is."""
    cfg = config_of(PAPER, **{"glue.lr": {"bert": 1.0e-4, "raft": 3.0e-5},
                              "squad.lr": {"default": 1.0e-4, "raft": 5.0e-5}})
    for n in (100, "full"):
        assert [_flag(cfg, "glue", "rte", v, n) for v in ("bert", "raft")] == ["0.0001", "3e-05"]
        assert [_flag(cfg, "squad", "squad", v, n) for v in ("bert", "raft")] == ["0.0001", "5e-05"]
    assert study.setting(cfg, "glue", "lr", task="rte", variant="raft", n=100) == (3e-5, "glue.lr.raft")
    assert study.setting(cfg, "squad", "lr", task="squad", variant="bert", n=100) == (1e-4, "squad.lr.default")
    # glue.efficient.lr still wins for its study; without it, the study takes glue.lr per variant
    assert [_flag(cfg, "glue_efficient", "rte", v, 100) for v in ("bert", "raft")] == ["0.01", "0.005"]
    del cfg["glue"]["efficient"]["lr"]
    assert _flag(cfg, "glue_efficient", "rte", "raft", 100) == "3e-05"
    preflight(cfg, None)
    with pytest.raises(ConfigError, match=r"'glue.lr': unknown key 'bret' \(did you mean 'bert'\?\)"):
        config_of(PAPER, **{"glue.lr": {"bret": 1.0e-4}})


# ------------------------------------------------------------------------------ pre-flight
BAD = {
    # name: (changes on paper.yaml, the key the error must name, words of the message)
    "window_vs_positions": ({"model.max_position_embeddings": 128}, "squad.max_seq_length",
                            "exceeds the pretrained model's 128 position embeddings"),
    "stride_vs_window": ({"squad.full_data.doc_stride": {"default": 128, "raft": 320}},
                         "squad.full_data.doc_stride.raft", "must be smaller than the context part"),
    "n_vs_pool": ({"glue.tasks": ["rte", "wnli"], "zeroshot.snli": False}, "glue.low_data.sizes",
                  "1000 is larger than the wnli train pool (476 examples)"),
    "efficient_n_vs_pool": ({"glue.efficient.tasks": ["wnli"], "glue.efficient.sizes": [500]},
                            "glue.efficient.sizes", "larger than the wnli train pool"),
    "squad_n_vs_pool": ({"squad.low_data.sizes": [100, 70000]}, "squad.low_data.sizes",
                        "larger than the squad train pool"),
    "batch_vs_devices": ({"pretrain.batch_size": 4000}, "pretrain.batch_size",
                         "not divisible by per_device_batch_size 128 x 4 processes"),
    "fp16_on_cpu": ({"glue.precision": "fp16", "resources.finetune_glue.gpu": 0}, "glue.precision",
                    "needs a CUDA device"),
    "pretrain_fp16_on_cpu": ({"precision": "fp16", "resources.pretrain.gpu": 0}, "precision",
                             "needs a CUDA device"),
    "layers_vs_model": ({"rational.layers": "0-20"}, "rational.layers", "valid: 0-11"),
    "unknown_init": ({"rational.init": "swish"}, "rational.init", "known: gelu"),
    "positions_vs_corpus": ({"model.max_position_embeddings": 64}, "model.max_position_embeddings",
                            "smaller than the pretraining sequence length 128"),
    "heads": ({"model.num_heads": 5}, "model.num_heads", "does not divide hidden_size 768"),
    "efficient_without_rafs": ({"rational.layers": "none"}, "glue.efficient", "needs a RAFT model"),
    "per_variant_without_default": ({"squad.max_seq_length": {"bert": 384}}, "squad.max_seq_length",
                                    "no value for raft"),
    "zeroshot_window_vs_positions": ({"zeroshot.triviaqa_window": {"max_seq_length": 1024}},
                                     "zeroshot.triviaqa_window.max_seq_length",
                                     ("1024 exceeds the pretrained model's 512 position embeddings "
                                      "(model.max_position_embeddings; by default the corpus sequence length) "
                                      "(job: zeroshot triviaqa bert)")),
    "zeroshot_stride_vs_window": ({"zeroshot.triviaqa_window": {"max_seq_length": {"bert": 384, "raft": 128}}},
                                  "squad.doc_stride", ("128 must be smaller than the context part of a window, "
                                                       "max_seq_length 128 - max_query_length 64 - 3 = 61")),
    "zeroshot_stride_key": ({"zeroshot.triviaqa_window": {"max_seq_length": 128, "doc_stride": {"raft": 100}}},
                            "zeroshot.triviaqa_window.doc_stride", "has no value for bert and no 'default'"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_preflight_names_the_key(name):
    changes, key, words = BAD[name]
    cfg = config_of(PAPER, **changes)
    with pytest.raises(ConfigError) as err:
        preflight(cfg, None)
    assert f"invalid configuration value at '{key}" in str(err.value)
    assert words in str(err.value)


def test_preflight_passes_the_paper_grid_with_local_data(paper, data_dir):
    """N = 1000 exceeds the RTE and MRPC dev parts (623, 917): allowed, the whole dev part is used."""
    preflight(paper, str(data_dir))
    from raft.data.glue import split_sizes

    assert split_sizes("rte", data_dir)["dev_part"] < 1000 and split_sizes("mrpc", data_dir)["dev_part"] < 1000


def test_rules_are_the_commands_rules():
    """The checks the pre-flight applies are the ones the commands raise (one owner)."""
    with pytest.raises(checks.SettingError) as err:
        checks.check_squad_window(128, 128, 64)
    assert err.value.as_flag().startswith("--doc-stride 128 must be smaller")
    from raft.data import squad

    with pytest.raises(ValueError, match="doc_stride=128 must be smaller"):
        squad.prepare_train_features({"question": [], "context": []}, None, max_seq_length=128, doc_stride=128)


def test_schema_file_parses():
    assert yaml.safe_load(SCHEMA.read_text())["properties"]["squad"]["properties"]["max_seq_length"]["default"] == 384


def test_fine_tuning_families_of_the_paper(paper):
    """Low-data runs batched per (task, variant, N) over their seeds; full-data runs one job per
    seed; MNLI and SQuAD full-data runs (zero-shot sources) keep their weights."""
    families = {f["name"]: f for f in study.finetune_families(paper)}
    assert sorted(families) == ["finetune_glue", "finetune_glue_efficient", "finetune_glue_efficient_full",
                                "finetune_glue_full", "finetune_glue_full_kept", "finetune_glue_search",
                                "finetune_squad", "finetune_squad_full_kept"]
    assert families["finetune_glue"]["seeds"] == paper["glue"]["low_data"]["seeds"]
    assert "seeds" not in families["finetune_glue_full"] and families["finetune_glue_full"]["n"] == "full"
    assert families["finetune_glue_full_kept"]["tasks"] == ["mnli"] and families["finetune_glue_full_kept"]["keep"]
    assert "mnli" not in families["finetune_glue_full"]["tasks"]
    efficient_full = families["finetune_glue_efficient_full"]  # one job per seed, every efficient task
    assert "seeds" not in efficient_full and efficient_full["n"] == "full" and not efficient_full.get("keep")
    assert efficient_full["tasks"] == paper["glue"]["efficient"]["tasks"]
    off = config_of(PAPER, **{"zeroshot.snli": False, "zeroshot.triviaqa": False})
    assert not any(f.get("keep") for f in study.finetune_families(off))


def test_zeroshot_needs_its_source_runs():
    with pytest.raises(ConfigError, match=r"'zeroshot.snli': true, but mnli is not in glue.tasks"):
        study.check_zeroshot(config_of(PAPER, **{"glue.tasks": ["rte"]}))
    with pytest.raises(ConfigError, match=r"'zeroshot.triviaqa': true, but squad.full_data.seeds is empty"):
        study.check_zeroshot(config_of(PAPER, **{"squad.full_data.seeds": []}))


def test_zeroshot_data_found_or_named(paper, tmp_path):
    from test_data_zeroshot import write_snli_jsonl

    write_snli_jsonl(tmp_path / "snli" / "snli_1.0_test.jsonl")
    found, left_out = study.zeroshot_available(paper, tmp_path, reachable=lambda: False)
    assert found == ["snli"] and len(left_out) == 1
    assert left_out[0].startswith("zero-shot triviaqa (zeroshot.triviaqa: true) is left out (no local copy")
    assert f"{tmp_path}/triviaqa/qa/verified-web-dev.json" in left_out[0] and "expected <data-dir>/triviaqa" in left_out[0]
    found, left_out = study.zeroshot_available(paper, tmp_path, reachable=lambda: True)  # the Hub answers
    assert found == ["snli", "triviaqa"] and not left_out
    runs = study.zeroshot_runs(paper, found)
    assert len(runs) == 2 * 2 * len(paper["glue"]["full_data"]["seeds"])


# ------------------------------------------------------------------------------ resources on this machine
def test_multi_gpu_pretraining_without_cuda_says_what_runs_instead(paper):
    """resources.pretrain.gpu: 4 (paper.yaml) on a machine without CUDA: a line saying the jobs train
    on the CPU (one process under the default profile's cap, else one gloo process per granted gpu)."""
    lines = study.resource_warnings(paper, cuda_here=lambda: False)
    assert lines == ["resources.pretrain.gpu: 4 but no CUDA GPU here: pretraining jobs that run on this machine "
                     "(not on a cluster's GPU nodes) train on the CPU, as one process under the default profile's "
                     "gpu=1 cap, else under torchrun as one CPU process (gloo) per gpu that --resources grants, up "
                     "to 4; resources.pretrain.gpu: 0 runs one CPU process with all the job's threads"]
    assert study.resource_warnings(paper, cuda_here=lambda: True) == []
    assert study.resource_warnings(paper, cuda_here=lambda: None) == []  # torch not importable: nothing known

    def never():
        raise AssertionError("CUDA looked up although no job asks for several GPUs")

    for gpu in (0, 1):
        assert study.resource_warnings(config_of(PAPER, **{"resources.pretrain.gpu": gpu}), cuda_here=never) == []


# ------------------------------------------------------------------------------ searches
def test_a_list_is_a_search_for_the_variants_it_can_change():
    """A list of rational lrs: one candidate per value for raft; bert (no RAF) runs once with the
    list's first value. A list of lrs is searched for both; lists multiply."""
    cfg = config_of(**{"glue.low_data.rational_lr": [5.0e-4, 1.0e-3, 5.0e-3]})
    assert study.search_grid(cfg, "glue", "rte", "raft", 300) == [
        {"rational_lr": 5e-4}, {"rational_lr": 1e-3}, {"rational_lr": 5e-3}]
    assert study.search_grid(cfg, "glue", "rte", "bert", 300) == [{}]
    assert flags(cfg, "glue", "rte", "bert", 300)["rational_lr"] == 5e-4
    assert study.values(study.finetune_settings(cfg, "glue", "rte", "raft", 300, {"rational_lr": 5e-3}))[
        "rational_lr"] == 5e-3
    both = config_of(**{"glue.lr": {"bert": [1.0e-4, 3.0e-4], "raft": 3.0e-4}, "glue.rational_lr": [1.0e-3, 5.0e-3]})
    assert len(study.search_grid(both, "glue", "rte", "bert", 300)) == 2
    assert study.search_grid(both, "glue", "rte", "raft", 300) == [{"rational_lr": 1e-3}, {"rational_lr": 5e-3}]
    frozen = config_of(**{"squad.rational_lr": [1.0e-3, 5.0e-3]})  # squad.mode frozen_rafs: nothing to search
    assert study.search_grid(frozen, "squad", "squad", "raft", 100) == [{}]


def test_search_labels_round_trip_exactly():
    for candidate in ({"rational_lr": 5e-4}, {"lr": 1e-05, "rational_lr": 0.123456789e-3}):
        label = study.search_label(candidate)
        assert "/" not in label and study.parse_search_label(label) == candidate
    assert study.search_label({"rational_lr": 1e-3}) == "rational_lr=0.001"
    with pytest.raises(ValueError, match="'epochs' is not a searchable setting"):
        study.parse_search_label("epochs=3")


def test_a_search_gets_its_own_rule_and_records():
    from raft import layout

    cfg = config_of(**{"glue.low_data.rational_lr": [5.0e-4, 1.0e-3]})
    families = {f["name"]: f for f in study.finetune_families(cfg)}
    assert families["finetune_glue_search"]["search"] and "finetune_squad_search" not in families
    assert families["finetune_glue_efficient_search"]["search"]  # glue.low_data is a layer of it too
    records = layout.study_records(cfg, [])["glue"]
    raft_rte = [r for r in records if "/rte/raft/" in r]
    assert raft_rte == [f"results/glue/rte/raft/n300/rational_lr={v}/seed{s}/metrics.json"
                        for s in cfg["glue"]["low_data"]["seeds"] for v in (0.0005, 0.001)]
    assert "results/glue/rte/bert/n300/seed2022/metrics.json" in records
    assert len(records) == len(study.runs(cfg, "glue")) * 3 // 2  # raft's half of the runs twice


def test_a_search_over_a_zeroshot_source_is_refused():
    with pytest.raises(ConfigError, match=r"'glue.full_data.rational_lr': a search over the full-data runs of mnli"):
        study.check_search(config_of(PAPER, **{"glue.full_data.rational_lr": [1.0e-3, 5.0e-3]}))
