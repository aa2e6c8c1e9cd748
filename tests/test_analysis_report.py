"""Display helpers: marks, footnotes, findings text, and the notebook normaliser."""

from __future__ import annotations

import json

import nbformat
import pytest
from test_analysis_synthetic import (
    glue_test_metrics,
    make_results,
    squad_hyperparameters,
    write_pretrain,
    write_run,
)

from raft import cli
from raft.analysis import aggregate as agg
from raft.analysis import findings, notebook, report


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return make_results(tmp_path_factory.mktemp("r") / "results")


def test_glue_table_marks_partial_cells_and_footnotes(results):
    _, _, summary = report.load_study(results, "glue")
    table, foot = report.format_table(summary, "100", "glue")
    assert list(table["task"]) == ["CoLA", "MRPC", "MRPC", "MNLI-m†‡", "MNLI-mm†‡", "GLUE average†‡"]
    assert list(table["metric"]) == ["MCC", "acc", "F1", "acc", "acc", "score"]
    mnli = table.iloc[3]
    for col in ("BERT (FAFT)", "RAFT", "Δ RAFT − BERT [95 % CI]"):
        assert mnli[col].endswith("†‡"), col
    assert not table.iloc[0]["RAFT"].endswith("†")
    assert any(f.startswith("†") for f in foot) and any(f.startswith("‡") for f in foot)
    assert "MNLI-m†‡: train pool subsampled to 2,000 examples" in foot
    # values are x 100 for GLUE
    cola = summary[(summary["task"] == "cola") & (summary["n"] == "100") & (summary["metric"] == "MCC")].iloc[0]
    assert table.iloc[0]["BERT (FAFT)"] == f"{cola.bert_mean * 100:.2f} ± {cola.bert_std * 100:.2f}"


def test_findings_state_uncertainty_and_partial_data(results):
    _, _, summary = report.load_study(results, "glue")
    text = findings.study_findings(summary, "glue")
    assert "**N = 100**" in text and "**N = full**" in text
    assert "GLUE average (×100)" in text and "95 % CI" in text
    assert "few paired seeds" in text  # 3 and 2 seeds
    assert "MNLI-m, MNLI-mm use partial data" in text
    assert findings.study_findings(summary.iloc[0:0], "squad").startswith("**Findings.** No SQuAD")


def test_findings_too_few_seeds(tmp_path):
    results = tmp_path / "results"
    for v, val in (("bert", 0.5), ("raft", 0.6)):
        write_run(results, "glue", "rte", v, 100, 1, glue_test_metrics("rte", val))
    _, _, summary = report.load_study(results, "glue")
    table, _ = report.format_table(summary, "100", "glue")
    assert set(table["verdict"]) == {"too few seeds"}
    assert "too few seeds" in findings.study_findings(summary, "glue")


def test_efficient_table_shows_parameter_counts(results):
    _, _, summary = report.load_study(results, "glue_efficient")
    table, _ = report.format_table(summary, "100", "glue_efficient", show_params=True)
    assert "RAFT RAF+head" in table.columns and "BERT bias+head" in table.columns
    assert set(table["trainable params (BERT/RAFT)"]) == {"1,666 / 1,679"}


def test_old_results_have_no_constant_marks(results):
    """The shared fixture's files predate constant-prediction tracking: nothing is marked."""
    for study in ("glue", "glue_efficient"):
        _, _, summary = report.load_study(results, study)
        assert not set(agg.SUMMARY_OPTIONAL_COLUMNS) & set(summary.columns)
        assert "Constant predictions" not in findings.study_findings(summary, study)
        assert findings.constant_findings(summary, study) is None
        for n in summary["n"].unique():
            table, foot = report.format_table(summary, n, study)
            assert not any(report.CONSTANT_MARK in str(v) for v in table.to_numpy().ravel())
            assert not any(report.CONSTANT_MARK in f for f in foot)


def _constant_study(root):
    """RTE N=100: every run constant; CoLA N=100: RAFT seed 2 constant; MRPC: old files."""
    for seed in (1, 2, 3):
        for v, gain in (("bert", 0.0), ("raft", 0.01 * seed)):
            write_run(root, "glue", "rte", v, 100, seed, glue_test_metrics("rte", 0.527), constant=True)
            write_run(root, "glue", "cola", v, 100, seed, glue_test_metrics("cola", 0.1 + gain),
                      constant=v == "raft" and seed == 2)
            write_run(root, "glue", "mrpc", v, 100, seed, glue_test_metrics("mrpc", 0.6 + gain))
    return root


def test_constant_predictions_marked_in_tables(tmp_path):
    _, _, summary = report.load_study(_constant_study(tmp_path / "results"), "glue")
    table, foot = report.format_table(summary, "100", "glue")
    rows = {(t, m): r for t, m, r in zip(table["task"], table["metric"], table.to_dict("records"))}
    assert list(table["task"]) == ["CoLA§", "MRPC", "MRPC", "RTE§", "GLUE average§"]
    rte = rows[("RTE§", "acc")]
    assert rte["BERT (FAFT)"].endswith("§") and rte["RAFT"].endswith("§")
    assert rte["Δ RAFT − BERT [95 % CI]"].endswith("§")
    cola = rows[("CoLA§", "MCC")]
    assert not cola["BERT (FAFT)"].endswith("§") and cola["RAFT"].endswith("§")  # only RAFT's cell
    assert not any("§" in v for v in rows[("MRPC", "acc")].values())
    assert any(f.startswith("§ rests on runs whose predictions were constant") for f in foot)
    assert "RTE§: 3 of 3 BERT runs and 3 of 3 RAFT runs predicted one class for every test example" in foot
    assert "CoLA§: 1 of 3 RAFT runs predicted one class for every test example" in foot
    assert ("GLUE average§: includes 3 BERT task runs and 4 RAFT task runs that predicted one class for "
            "every test example") in foot


def test_constant_predictions_in_findings(tmp_path):
    _, _, summary = report.load_study(_constant_study(tmp_path / "results"), "glue")
    text = findings.study_findings(summary, "glue")
    assert ("CoLA N = 100: 1 of 3 RAFT runs predicted one class for every test example; RTE N = 100: "
            "3 of 3 BERT runs and 3 of 3 RAFT runs predicted one class for every test example — these scores "
            "measure the class balance of the test set") in text
    assert "The GLUE average includes such runs at N = 100 (3 BERT task runs and 4 RAFT task runs)" in text
    assert "per task (selection score) — no detectable difference: " in text and "RTE§" in text
    # the warning comes before the per-N results
    assert text.index("Constant predictions") < text.index("**N = 100**")


def test_constant_predictions_efficient_study(tmp_path):
    results = make_results(tmp_path / "results", tasks=("cola", "mrpc"), ns=(100,), squad=False,
                           pretrain=False, constant_tasks=("cola",))
    _, _, summary = report.load_study(results, "glue_efficient")
    text = findings.study_findings(summary, "glue_efficient")
    assert ("CoLA N = 100: 3 of 3 BERT bias+head runs and 3 of 3 RAFT RAF+head runs predicted one class "
            "for every test example") in text
    table, _ = report.format_table(summary, "100", "glue_efficient", show_params=True)
    assert table.iloc[0]["BERT bias+head"].endswith("§") and table.iloc[0]["task"] == "CoLA§"
    assert table.iloc[1]["task"] == "MRPC"  # recorded, not constant: no mark


def test_squad_findings_in_points(results):
    _, _, summary = report.load_study(results, "squad")
    text = findings.study_findings(summary, "squad")
    assert "EM: RAFT" in text and "F1: RAFT" in text and "Δ = +1.00" in text
    table, _ = report.format_table(summary, "100", "squad")
    assert list(table["metric"]) == ["EM", "F1"]
    assert set(table["modes (BERT/RAFT)"]) == {"full / frozen_rafs"}


def test_pretrain_and_shapes_findings(results):
    pre = agg.load_pretrain(results)
    text = findings.pretrain_findings(pre)
    assert "11.750" in text and "12.500" in text and "one pretraining run per variant" in text
    assert "reduced-scale" in text
    assert findings.pretrain_findings(pre.iloc[0:0]).startswith("**Findings.** No pretraining")
    from raft.analysis import reference_rafs, shapes

    ours = agg.pretrained_rationals(results)
    runs = agg.load_runs(results, "glue")
    mv = shapes.movement_table(runs, ours)
    text = findings.shapes_findings(shapes.closest_table(ours), shapes.closest_table(reference_rafs.published_rafs()),
                                  report.amplitude_table(ours), mv)
    assert "closest standard activation" in text and "published checkpoint" in text
    assert "largest mean movement" in text and "upper half" in text
    fc = report.finetuned_closest(runs)
    assert set(fc["n"]) == {"100", "full"} and len(fc) == 3 * 2 * 4
    piv = report.finetuned_closest_pivot(fc, "100")
    assert list(piv.columns) == ["CoLA", "MRPC", "MNLI"] and list(piv.index)[-1] == "pooler"


# ------------------------------------------------------------------ SQuAD windows
def _squad_tree(root, windows: dict, *, seq_len: int | None = 128, ns=(100,), seeds=(1, 2, 3)):
    """SQuAD runs with ``windows`` {variant: (max_seq_length, doc_stride)} or {variant: {seed: (...)}},
    and pretraining runs with sequences of ``seq_len`` tokens (none for ``seq_len=None``)."""
    for variant, w in windows.items():
        if seq_len is not None:
            write_pretrain(root, variant, perplexity=12.0, seq_len=seq_len, max_position_embeddings=512)
        for n in ns:
            for seed in seeds:
                ws = w[seed] if isinstance(w, dict) else w
                write_run(root, "squad", "squad", variant, n, seed,
                          {"test": {"exact_match": 40.0 + seed, "f1": 50.0 + seed, "score": 50.0 + seed}},
                          hyperparameters=squad_hyperparameters(*ws))
    return root


def test_load_runs_keeps_hyperparameters(tmp_path):
    root = _squad_tree(tmp_path / "results", {"bert": (384, 128)}, ns=(100,), seeds=(1,))
    runs = agg.load_runs(root, "squad")
    assert runs.iloc[0]["hyperparameters"]["max_seq_length"] == 384
    assert runs.iloc[0]["hyperparameters"]["doc_stride"] == 128
    assert list(agg.long_table(runs).columns) == agg.LONG_COLUMNS


def test_squad_same_windows_no_warning(tmp_path):
    root = _squad_tree(tmp_path / "results", {"bert": (384, 128), "raft": (384, 128)}, ns=(100, "full"))
    table = report.squad_windows(root)
    assert list(table.columns) == report.SQUAD_WINDOW_COLUMNS
    assert list(zip(table["n"], table["variant"])) == [("100", "bert"), ("100", "raft"),
                                                        ("full", "bert"), ("full", "raft")]
    assert set(table["max_seq_length"]) == {(384,)} and set(table["doc_stride"]) == {(128,)}
    assert table["seeds_agree"].all() and set(table["pretrain_seq_len"]) == {128}
    assert set(table["max_position_embeddings"]) == {512}
    text = findings.squad_window_findings(table)
    assert "Both variants used the same windows: 384 tokens (doc_stride 128) at N = 100 and full" in text
    assert "Warning" not in text and "different windows" not in text
    shown = report.squad_windows_display(table)
    assert list(shown["window (max_seq_length)"]) == ["384"] * 4
    assert list(shown["positions never trained in pretraining"]) == ["128..383"] * 4


def test_squad_different_windows_warn(tmp_path):
    root = _squad_tree(tmp_path / "results", {"bert": (384, 128), "raft": (128, 32)}, seq_len=512,
                       ns=(100, "full"))
    text = findings.squad_window_findings(report.squad_windows(root))
    assert "Warning: the variants were fine-tuned with different windows" in text
    assert "N = full: BERT (FAFT) 384 tokens (doc_stride 128), RAFT 128 tokens (doc_stride 32)" in text
    assert "N = 100: BERT (FAFT) 384 tokens" in text
    assert "Δ mixes the method (the activation function) with the window choice" in text
    assert "+2.05 F1" in text and "Both variants used the same windows" not in text


def test_squad_windows_differ_at_one_n_only(tmp_path):
    root = tmp_path / "results"
    _squad_tree(root, {"bert": (128, 32), "raft": (128, 32)}, ns=(100,))
    _squad_tree(root, {"bert": (384, 128), "raft": (128, 32)}, ns=("full",))
    text = findings.squad_window_findings(report.squad_windows(root))
    assert "different windows" in text and "N = full: BERT (FAFT) 384 tokens" in text and "At this N" in text
    assert "same windows at the other N: 128 tokens (doc_stride 32) at N = 100" in text
    # BERT's full-data window is the only one past the pretraining length, so the caveat is uneven
    assert "BERT (FAFT) at N = full (windows of 384 tokens): positions 128..383 were never trained" in text
    assert "At N = full this affects the variants differently" in text


def test_squad_untrained_positions_caveat(tmp_path):
    root = _squad_tree(tmp_path / "results", {"bert": (384, 128), "raft": (384, 128)}, seq_len=128)
    text = findings.squad_window_findings(report.squad_windows(root))
    assert ("BERT (FAFT) and RAFT at N = 100 (windows of 384 tokens): positions 128..383 were never trained "
            "during pretraining (pretraining sequences had 128 tokens)") in text
    assert "affects the variants differently" not in text


def test_squad_window_within_pretraining_length_no_caveat(tmp_path):
    for w in (128, 100):
        root = _squad_tree(tmp_path / f"results{w}", {"bert": (w, 32), "raft": (w, 32)}, seq_len=128)
        table = report.squad_windows(root)
        text = findings.squad_window_findings(table)
        assert "never trained" not in text and "Untrained" not in text
        assert "Every window fits within its variant's pretraining sequence length" in text
        assert set(report.squad_windows_display(table)["positions never trained in pretraining"]) == {"none"}


def test_squad_windows_seeds_disagree_and_missing_records(tmp_path):
    root = _squad_tree(tmp_path / "results", {"bert": (384, 128),
                                              "raft": {1: (384, 128), 2: (384, 128), 3: (128, 32)}},
                       seq_len=None)
    table = report.squad_windows(root)
    raft = table[table["variant"] == "raft"].iloc[0]
    assert not raft["seeds_agree"] and raft["max_seq_length"] == (128, 384)
    assert raft["settings"] == "seed 3: 128 tokens, doc_stride 32; seeds 1, 2: 384 tokens, doc_stride 128"
    text = findings.squad_window_findings(table)
    assert "different windows" in text and "RAFT 128 and 384 tokens" in text
    assert f"The seeds of RAFT at N = 100 disagree ({raft['settings']})." in text
    # no pretraining records: the caveat cannot be checked, and nothing claims the windows fit
    assert "pretraining sequence length of BERT (FAFT) and RAFT is not recorded" in text
    assert "never trained" not in text and "Every window fits" not in text
    shown = report.squad_windows_display(table)
    assert shown.iloc[1]["window (max_seq_length)"] == "128 and 384 (seeds disagree)"
    assert shown.iloc[1]["settings per seed"] == raft["settings"] and shown.iloc[0]["settings per seed"] == ""
    assert shown.iloc[0]["pretraining seq len"] == "–"


def test_squad_windows_empty_and_unrecorded(tmp_path):
    empty = report.squad_windows(tmp_path / "none")
    assert empty.empty and list(empty.columns) == report.SQUAD_WINDOW_COLUMNS
    assert findings.squad_window_findings(empty).startswith("**Fine-tuning windows.** No SQuAD runs")
    assert report.squad_windows_display(empty).empty
    root = tmp_path / "results"
    write_run(root, "squad", "squad", "bert", 100, 1, {"test": {"f1": 50.0}})  # no window recorded
    write_run(root, "squad", "squad", "raft", 100, 1, {"test": {"f1": 51.0}})
    text = findings.squad_window_findings(report.squad_windows(root))
    assert "window is missing" in text and "Every window fits" not in text and "Warning" not in text


# ------------------------------------------------------------------ normaliser
def _executed_notebook():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("x = 1")]
    nb.cells[0]["id"] = "a1b2c3"
    nb.cells[1]["id"] = "f00ba4"
    nb.cells[1].execution_count = 1
    nb.cells[1].metadata = {"papermill": {"start_time": "2025-01-01T00:00:00", "duration": 0.5,
                                          "status": "completed", "exception": False},
                            "execution": {"iopub.execute_input": "2025-01-01T00:00:00.1Z"},
                            "tags": ["parameters"]}
    nb.cells[1].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="a\n"),
        nbformat.v4.new_output("stream", name="stdout", text="b\n"),
        nbformat.v4.new_output("stream", name="stderr", text="Warning: at /tmp/x\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "<Figure at 0x7f3a2b>"}, execution_count=1),
    ]
    nb.metadata = {
        "papermill": {"start_time": "t0", "end_time": "t1", "duration": 3.2, "parameters": {"results_dir": "r"},
                      "input_path": "in.ipynb", "output_path": "/abs/out.ipynb", "version": "2.7.0",
                      "environment_variables": {}, "exception": None},
        "language_info": {"name": "python", "version": "3.11.7"},
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    }
    return nb


def test_normalize_strips_volatile_fields(tmp_path):
    path = tmp_path / "nb.ipynb"
    nbformat.write(_executed_notebook(), path)
    assert cli.main(["normalize-notebook", str(path), "--html", str(tmp_path / "nb.html")]) == 0
    raw = json.loads(path.read_text())
    assert raw["metadata"]["papermill"] == {"parameters": {"results_dir": "r"}}
    assert "version" not in raw["metadata"]["language_info"]
    assert [c["id"] for c in raw["cells"]] == ["cell-000", "cell-001"]
    code = raw["cells"][1]
    assert code["metadata"] == {"tags": ["parameters"]}
    assert [o["output_type"] for o in code["outputs"]] == ["stream", "execute_result"]
    assert "".join(code["outputs"][0]["text"]) == "a\nb\n"
    assert "".join(code["outputs"][1]["data"]["text/plain"]) == "<Figure at 0x…>"
    first = path.read_bytes()
    html = (tmp_path / "nb.html").read_bytes()
    notebook.normalize_file(path, html=tmp_path / "nb.html")  # idempotent
    assert path.read_bytes() == first and (tmp_path / "nb.html").read_bytes() == html
    nbformat.validate(nbformat.read(path, as_version=4))


def test_normalize_keep_stderr(tmp_path):
    path = tmp_path / "nb.ipynb"
    nbformat.write(_executed_notebook(), path)
    notebook.normalize_file(path, keep_stderr=True)
    code = json.loads(path.read_text())["cells"][1]
    assert [o.get("name") for o in code["outputs"]][:2] == ["stdout", "stderr"]
