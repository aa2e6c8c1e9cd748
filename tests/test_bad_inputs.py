"""Bad inputs a new user can hit: each one fails early with a message naming the file and the
line / question id / key, exits non-zero before any training and leaves no result file behind.

Every test builds its own small bad copy in tmp_path (the shared data folder is read-only).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from test_analysis_synthetic import glue_test_metrics, write_run

from raft.analysis import aggregate as agg
from raft.cli import main as cli
from raft.data import glue, squad
from raft.train import runtime

FAST = ["--epochs", "1", "--patience", "1", "--max-test-examples", "16", "--eval-batch-size", "16",
        "--num-threads", "1"]


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()  # the CLI runs set 1 thread; restore it
    yield
    torch.set_num_threads(n)


@pytest.fixture
def no_training(monkeypatch):
    """Any call into the training loop fails the test: the errors must come before it."""
    def boom(*args, **kwargs):
        raise AssertionError("training started despite a bad input")

    from raft.train import finetune

    monkeypatch.setattr(finetune, "train_with_settings", boom)  # GLUE and SQuAD share the skeleton


def _run_cli(argv) -> int:
    try:
        return cli(argv)
    except SystemExit as exc:  # argparse errors
        return int(exc.code)


# ------------------------------------------------------------------------------- GLUE
def _stsb_copy(data_dir, tmp_path):
    """<tmp>/data/glue/STS-B: a copy of the local STS-B folder (train.tsv, dev.tsv)."""
    root = tmp_path / "data"
    d = root / "glue" / "STS-B"
    d.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        shutil.copyfile(data_dir / "glue" / "STS-B" / name, d / name)
    return root, d


def _set_score(path, lineno: int, score: str) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    fields = lines[lineno - 1].split("\t")
    fields[-1] = score
    lines[lineno - 1] = "\t".join(fields)
    path.write_text("\n".join(lines), encoding="utf-8")


@pytest.mark.parametrize("score", ["nan", "42", "-0.5", "inf", "5.0001"])
def test_stsb_score_out_of_range_names_file_and_line(data_dir, tmp_path, score):
    _, d = _stsb_copy(data_dir, tmp_path)
    _set_score(d / "train.tsv", 3, score)
    with pytest.raises(glue.GlueFormatError) as err:
        glue.read_glue_tsv("stsb", d / "train.tsv")
    msg = str(err.value)
    assert f"{d / 'train.tsv'}:3: bad stsb label {score!r}" in msg
    assert "similarity score from 0 to 5" in msg


def test_stsb_score_bounds_are_valid(data_dir, tmp_path):
    _, d = _stsb_copy(data_dir, tmp_path)
    _set_score(d / "dev.tsv", 2, "0")
    _set_score(d / "dev.tsv", 3, "5")
    cols = glue.read_glue_tsv("stsb", d / "dev.tsv")
    assert cols["label"][:2] == [0.0, 5.0]


def test_non_utf8_glue_file_names_file_and_line(data_dir, tmp_path):
    _, d = _stsb_copy(data_dir, tmp_path)
    path = d / "dev.tsv"
    lines = path.read_bytes().split(b"\n")
    lines[4] = lines[4].replace(b"\t", b"\t\xff\xfe", 1)  # line 5
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(glue.GlueFormatError) as err:
        glue.read_glue_tsv("stsb", path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:5: not UTF-8 text: byte 0xff at column ")
    assert "GLUE files must be UTF-8 encoded" in msg


def test_mrpc_byte_order_mark_and_crlf_still_read(data_dir):
    cols = glue.read_glue_tsv("mrpc", data_dir / "glue" / "MRPC" / "dev.tsv")
    assert len(cols["label"]) == 408 and set(cols["label"]) == {0, 1}
    assert not any(t.endswith("\r") for t in cols["text_b"])


@pytest.mark.parametrize("score", ["nan", "42"])
def test_finetune_glue_bad_stsb_score_fails_before_training(data_dir, tiny_pretrained, tmp_path, capsys,
                                                            no_training, score):
    root, d = _stsb_copy(data_dir, tmp_path)
    _set_score(d / "train.tsv", 7, score)
    out = tmp_path / "run" / "metrics.json"
    rc = _run_cli(["finetune-glue", "--pretrained", str(tiny_pretrained["bert"]), "--task", "stsb", "--n", "16",
                   "--seed", "1", "--output", str(out), "--data-dir", str(root), *FAST])
    err = capsys.readouterr().err
    assert rc == 2
    assert "raft finetune-glue: error: cannot load GLUE stsb: " in err
    assert f"{d / 'train.tsv'}:7: bad stsb label {score!r}" in err
    assert "Traceback" not in err
    assert not out.exists() and not out.parent.exists()


def test_finetune_glue_non_utf8_fails_before_training(data_dir, tiny_pretrained, tmp_path, capsys, no_training):
    root, d = _stsb_copy(data_dir, tmp_path)
    path = d / "train.tsv"
    data = path.read_bytes()
    k = data.index(b"\n") + 1  # start of line 2
    path.write_bytes(data[:k] + b"\x80" + data[k:])
    out = tmp_path / "run" / "metrics.json"
    rc = _run_cli(["finetune-glue", "--pretrained", str(tiny_pretrained["bert"]), "--task", "stsb", "--n", "16",
                   "--seed", "1", "--output", str(out), "--data-dir", str(root), *FAST])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"raft finetune-glue: error: cannot load GLUE stsb: {path}:2: not UTF-8 text: byte 0x80 at column 1" in err
    assert not out.exists()


def test_finetune_glue_truncated_safetensors(data_dir, tiny_pretrained, tmp_path, capsys, no_training):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_pretrained["bert"], model_dir)
    weights = model_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    out = tmp_path / "run" / "metrics.json"
    rc = _run_cli(["finetune-glue", "--pretrained", str(model_dir), "--task", "rte", "--n", "16", "--seed", "1",
                   "--output", str(out), "--data-dir", str(data_dir), *FAST])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"raft finetune-glue: error: --pretrained: cannot read the model weights {weights}: " in err
    assert "truncated or corrupt" in err
    assert "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------------------------- SQuAD
CONTEXTS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps all day long in the sun.",
    "Paris is the capital of France. It is known for the Eiffel Tower and fine food.",
    "Water boils at one hundred degrees Celsius at sea level, and freezes at zero degrees.",
    "The Nile is a long river in Africa. It flows north into the Mediterranean Sea.",
]
ANSWERS = [("What jumps over the dog?", "quick brown fox"), ("Where does the dog sleep?", "in the sun"),
           ("What is the capital of France?", "Paris"), ("What is Paris known for?", "the Eiffel Tower"),
           ("When does water boil?", "one hundred degrees Celsius"), ("When does water freeze?", "zero degrees"),
           ("Where is the Nile?", "Africa"), ("Where does the Nile flow?", "the Mediterranean Sea")]


def _squad_obj(shift: int = 0) -> dict:
    """Two articles, two paragraphs each, two questions per paragraph (ids q0..q7)."""
    data = []
    for a in range(2):
        paragraphs = []
        for p in range(2):
            c = 2 * a + p
            context = CONTEXTS[c]
            qas = []
            for k in range(2):
                i = 2 * c + k
                question, text = ANSWERS[i]
                start = context.index(text)
                qas.append({"id": f"q{i}", "question": question,
                            "answers": [{"text": text, "answer_start": start + shift}]})
            paragraphs.append({"context": context, "qas": qas})
        data.append({"title": f"Article_{a}", "paragraphs": paragraphs})
    return {"version": "1.1", "data": data}


def _write_squad(tmp_path, obj) -> tuple:
    root = tmp_path / "data"
    path = root / "squad" / "v1.1" / "dev-v1.1.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return root, path


def test_squad_good_file_reads_unchanged(tmp_path, caplog):
    _, path = _write_squad(tmp_path, _squad_obj())
    with caplog.at_level(logging.WARNING, logger="raft.data.squad"):
        notes: list[str] = []
        cols = squad.read_squad_json(path, notes=notes)
    assert cols["id"] == [f"q{i}" for i in range(8)] and notes == [] and not caplog.records
    for context, ans in zip(cols["context"], cols["answers"]):
        s, t = ans["answer_start"][0], ans["text"][0]
        assert context[s:s + len(t)] == t


def test_squad_shifted_offsets_are_fixed_and_counted(tmp_path, caplog):
    root, path = _write_squad(tmp_path, _squad_obj(shift=7))
    notes: list[str] = []
    with caplog.at_level(logging.WARNING, logger="raft.data.squad"):
        cols = squad.read_squad_json(path, notes=notes)
    for context, ans in zip(cols["context"], cols["answers"]):  # every span points at its text again
        s, t = ans["answer_start"][0], ans["text"][0]
        assert context[s:s + len(t)] == t
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert f"{path}: 8 of 8 answer offsets did not point at the answer text" in warning
    assert "question id 'q0'" in warning
    assert notes == [("SQuAD: 8 of 8 answers in dev-v1.1.json had an answer_start that did not point at the "
                      "answer text; each was moved to the nearest occurrence of the text in its context.")]
    data = squad.load_squad(root)  # the note reaches the data notes (and so metrics.json)
    assert any("8 of 8 answers in dev-v1.1.json" in n for n in data.data_notes)


def test_squad_offset_fix_takes_the_nearest_occurrence(tmp_path):
    obj = _squad_obj()
    para = obj["data"][0]["paragraphs"][0]  # "The dog" occurs twice: 'the lazy dog' and 'The dog sleeps'
    second = para["context"].index("dog sleeps")
    para["qas"][0]["answers"] = [{"text": "dog", "answer_start": second + 3}]
    _, path = _write_squad(tmp_path, obj)
    cols = squad.read_squad_json(path)
    assert cols["answers"][0]["answer_start"] == [second]


def test_squad_answer_not_in_context_is_an_error(tmp_path):
    obj = _squad_obj()
    obj["data"][1]["paragraphs"][0]["qas"][1]["answers"][0]["text"] = "Berlin"
    _, path = _write_squad(tmp_path, obj)
    with pytest.raises(ValueError) as err:
        squad.read_squad_json(path)
    assert str(err.value) == (f"{path}: question id 'q5' (data[1].paragraphs[0].qas[1]): answer 0 text 'Berlin' "
                              f"does not occur in its context (answer_start {CONTEXTS[2].index('zero degrees')})")


def test_squad_question_without_text_names_file_and_id(tmp_path):
    obj = _squad_obj()
    del obj["data"][0]["paragraphs"][1]["qas"][0]["question"]
    _, path = _write_squad(tmp_path, obj)
    with pytest.raises(ValueError) as err:
        squad.read_squad_json(path)
    assert str(err.value) == f"{path}: question id 'q2' (data[0].paragraphs[1].qas[0]): no 'question' text"


@pytest.mark.parametrize("edit, expected", [
    (lambda o: o["data"][0]["paragraphs"][0]["qas"][1].pop("id"),
     "data[0].paragraphs[0].qas[1]: question entry without an 'id'"),
    (lambda o: o["data"][1]["paragraphs"][1].pop("context"),
     "data[1].paragraphs[1]: paragraph without a 'context' string"),
    (lambda o: o["data"][1].pop("paragraphs"), "data[1]: article without a 'paragraphs' list"),
    (lambda o: o["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start="x"),
     "question id 'q0' (data[0].paragraphs[0].qas[0]): answer 0: 'answer_start' 'x' is not an integer"),
    (lambda o: o["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].pop("text"),
     "question id 'q0' (data[0].paragraphs[0].qas[0]): answer 0 without a 'text' string"),
])
def test_squad_malformed_entries_name_file_and_place(tmp_path, edit, expected):
    obj = _squad_obj()
    edit(obj)
    _, path = _write_squad(tmp_path, obj)
    with pytest.raises(ValueError) as err:
        squad.read_squad_json(path)
    assert str(err.value) == f"{path}: {expected}"


def test_finetune_squad_missing_question_fails_before_training(tiny_pretrained, tmp_path, capsys, no_training):
    obj = _squad_obj()
    del obj["data"][1]["paragraphs"][1]["qas"][1]["question"]
    root, path = _write_squad(tmp_path, obj)
    out = tmp_path / "run" / "metrics.json"
    rc = _run_cli(["finetune-squad", "--pretrained", str(tiny_pretrained["bert"]), "--n", "2", "--seed", "1",
                   "--output", str(out), "--data-dir", str(root), "--epochs", "1", "--patience", "1",
                   "--max-seq-length", "96", "--doc-stride", "24", "--max-query-length", "24", "--num-threads", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert (f"raft finetune-squad: error: cannot load SQuAD v1.1: {path}: question id 'q7' "
            "(data[1].paragraphs[1].qas[1]): no 'question' text") in err
    assert not out.exists()


# ------------------------------------------------------------------------------- aggregate
def test_aggregate_fails_on_a_cut_off_metrics_json(tmp_path, capsys):
    results = tmp_path / "results"
    write_run(results, "glue", "rte", "bert", 100, 1, glue_test_metrics("rte", 0.6))
    bad = write_run(results, "glue", "rte", "raft", 100, 1, glue_test_metrics("rte", 0.7))
    text = bad.read_text()
    bad.write_text(text[: len(text) // 2])  # a job killed while writing
    out = tmp_path / "tables"
    rc = _run_cli(["aggregate", "--results", str(results), "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(f"raft aggregate: error: {bad}: broken result file: not valid JSON (")
    assert re.search(r"line \d+ column \d+", err)
    assert "cut off" in err and "Traceback" not in err
    assert not out.exists()  # no partial set of tables


@pytest.mark.parametrize("content, what", [("", "empty"), ("[1, 2]", "expected a JSON object, got list")])
def test_aggregate_fails_on_empty_or_non_object_metrics_json(tmp_path, capsys, content, what):
    results = tmp_path / "results"
    write_run(results, "glue", "rte", "bert", 100, 1, glue_test_metrics("rte", 0.6))
    bad = results / "pretrain" / "raft" / "metrics.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(content)
    out = tmp_path / "tables"
    assert _run_cli(["aggregate", "--results", str(results), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"raft aggregate: error: {bad}: broken result file: {what}" in err
    assert not out.exists()


def test_aggregate_missing_files_are_still_fine(tmp_path):
    results = tmp_path / "results"
    write_run(results, "glue", "rte", "bert", 100, 1, glue_test_metrics("rte", 0.6))
    assert agg._read_json(results / "pretrain" / "raft" / "metrics.json") is None
    assert cli(["aggregate", "--results", str(results), "--output", str(tmp_path / "tables")]) == 0
    assert (tmp_path / "tables" / "glue.csv").read_text().count("\n") > 1


# ------------------------------------------------------------------------------- --compile
def test_compile_without_a_cpp_compiler_is_refused_before_any_data_work(tiny_pretrained, tmp_path, capsys,
                                                                        monkeypatch, no_training):
    from torch._inductor import cpp_builder, exc

    def no_compiler():
        raise exc.InvalidCxxCompiler

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    message = ("error: --compile (the config's compile: true) on the CPU needs a C++ compiler for torch.compile, "
               "and none was found")
    rc = _run_cli(["pretrain", "--corpus", str(tmp_path / "no-corpus"), "--output", str(tmp_path / "pre"),
                   "--variant", "bert", "--device", "cpu", "--compile"])
    assert rc == 2 and f"raft pretrain: {message}" in capsys.readouterr().err  # not the missing corpus
    out = tmp_path / "run" / "metrics.json"
    rc = _run_cli(["finetune-glue", "--pretrained", str(tiny_pretrained["bert"]), "--task", "rte", "--n", "16",
                   "--seed", "1", "--output", str(out), "--data-dir", str(tmp_path / "no-data"), "--compile", *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and f"raft finetune-glue: {message}" in err and "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------------------------- a full disk
FREE = 1536 * 1024  # what the tests make the file system report: "1.5 MiB free"


def _disk_full_on(monkeypatch, target: Path) -> None:
    """``os.replace`` onto ``target`` fails as on a full disk (other renames go through); the free
    space reads as 1.5 MiB."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst) == target:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(runtime, "free_space", lambda folder: FREE)


def test_write_json_atomic_on_a_full_disk_names_the_file_and_leaves_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "run" / "metrics.json"
    runtime.write_json_atomic(path, {"old": True})
    _disk_full_on(monkeypatch, path)
    with pytest.raises(runtime.DiskFullError) as err:
        runtime.write_json_atomic(path, {"new": True})
    mount = runtime.mount_point(tmp_path)
    assert str(err.value) == f"no space left on device writing {path} (1.5 MiB free on {mount})"
    assert json.loads(path.read_text()) == {"old": True}  # the old file, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]  # no temporary file left
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == errno.ENOSPC


def test_mount_point_and_sizes():
    assert runtime.mount_point("/no/such/folder/file.json") == Path("/")
    assert [runtime._size(n) for n in (0, 512, FREE, 12.3 * 2**30)] == ["0 B", "512 B", "1.5 MiB", "12.3 GiB"]


def test_finetune_glue_on_a_full_disk_is_one_line_and_exit_2(data_dir, tiny_pretrained, tmp_path, capsys,
                                                             monkeypatch):
    out = tmp_path / "run" / "metrics.json"
    _disk_full_on(monkeypatch, out)
    rc = _run_cli(["finetune-glue", "--pretrained", str(tiny_pretrained["bert"]), "--task", "rte", "--n", "16",
                   "--seed", "1", "--output", str(out), "--data-dir", str(data_dir), *FAST])
    err = capsys.readouterr().err
    assert rc == 2
    mount = runtime.mount_point(tmp_path)
    assert (f"raft finetune-glue: error: no space left on device writing {out} (1.5 MiB free on {mount})\n"
            in err)
    assert "Traceback" not in err
    assert not out.exists() and list(out.parent.iterdir()) == []  # nothing half-written


def test_run_command_names_the_file_of_another_full_disk_error(tmp_path, capsys, monkeypatch):
    """ENOSPC from a write that is not ours (a library's): the file the error names, exit 2."""
    monkeypatch.setattr(runtime, "free_space", lambda folder: 0)
    dst = tmp_path / "model" / "model.safetensors"

    def copy(args):  # shutil.copyfile's ENOSPC names the source, then the destination
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "src"), None, str(dst))

    assert runtime.run_command("raft x", copy, None) == 2
    mount = runtime.mount_point(tmp_path)
    assert capsys.readouterr().err == f"raft x: error: no space left on device writing {dst} (0 B free on {mount})\n"

    def other(args):
        raise OSError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):  # any other OSError is not ours to word
        runtime.run_command("raft x", other, None)
