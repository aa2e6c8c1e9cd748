"""`raft export`: Hub-ready folders that load with trust_remote_code where `raft` cannot be imported.

Tiny raft models (variant raft with RAFs in all layers + pooler, variant bert) with each head are
saved as the package saves them, exported with `raft export`, and loaded with the Auto classes in
child processes: one whose `import raft` fails, one that has imported `raft.modeling` (whose
"raft-bert" type must not be confused with the export's). Their outputs must equal the package's.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from raft import hub_modeling
from raft.cli import main as cli
from raft.export import HEADS as EXPORT_HEADS
from raft.modeling import HEADS, load_pretrained, make_config, rational_modules
from raft.rational import init_coefficients, rational

REPO = str(Path(__file__).resolve().parents[1])
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             max_position_embeddings=32)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "cat", "sat", "on", "mat", "dog", "##s"]
INPUT_IDS = [[2, 5, 7, 8, 9, 5, 10, 3], [2, 6, 11, 12, 3, 0, 0, 0]]
ATTENTION = [[1] * 8, [1] * 5 + [0] * 3]
CASES = [(variant, head) for variant in ("raft", "bert") for head in HEADS]
# the authors' BERT variant (DeepNorm, no embedding LayerNorm, their initialisation), a raft model
AUTHORS = dict(deepnorm=True, embedding_layernorm=False, weight_init="authors")
AUTHORS_CASES = [("authors", "masked-lm"), ("authors", "question-answering")]
AUTO = {head: auto for head, (_, auto, *_) in EXPORT_HEADS.items()}
HIDE_RAFT = "raft is hidden from this process by tests/test_export.py"

CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    import transformers

    mode, jobs_file, out_dir, package_folder = sys.argv[1:]
    summary = {}
    try:
        import raft.modeling
        summary["raft"] = raft.modeling.__file__
    except ImportError as exc:
        summary["raft_import_error"] = str(exc)
    jobs, inputs = json.load(open(jobs_file))
    inputs = {k: torch.tensor(v) for k, v in inputs.items()}
    for name, (folder, auto) in jobs.items():
        model = getattr(transformers, auto).from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
        logits = out.logits if hasattr(out, "logits") else torch.stack([out.start_logits, out.end_logits])
        np.save(f"{out_dir}/{name}.logits.npy", logits.numpy())
        np.save(f"{out_dir}/{name}.hidden.npy", out.hidden_states[-1].numpy())
        rafs = {n: [m.numerator.tolist(), m.denominator.tolist()] for n, m in model.named_modules()
                if type(m).__name__ == "Rational"}
        summary[name] = {"class": type(model).__module__ + "." + type(model).__name__,
                         "model_type": model.config.model_type, "rafs": rafs}
    if mode == "with-raft":
        from transformers import AutoConfig, AutoModelForMaskedLM
        folder = jobs["raft-masked-lm"][0]
        try:
            AutoModelForMaskedLM.from_pretrained(folder)
        except ValueError as exc:
            summary["without_trust"] = str(exc)
        summary["package_config"] = type(AutoConfig.from_pretrained(package_folder)).__module__
    else:
        folder = jobs["raft-sequence-classification"][0]
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        summary["tokens"] = tok("the cats sat on a mat")["input_ids"]
        auto = transformers.AutoModelForSequenceClassification  # shared again from here: code and auto_map kept
        auto.from_pretrained(folder, trust_remote_code=True).save_pretrained(f"{out_dir}/resaved")
        again = auto.from_pretrained(f"{out_dir}/resaved", trust_remote_code=True).eval()
        with torch.no_grad():
            np.save(f"{out_dir}/resaved.logits.npy", again(**inputs).logits.numpy())
    summary["raft_modules"] = sorted(k for k in sys.modules if k == "raft" or k.startswith("raft."))
    json.dump(summary, open(f"{out_dir}/summary.json", "w"))
""")


def _perturb(model, scale=1.0):
    """Learned-looking RAFs: coefficients away from the init, so a RAF that failed to load shows."""
    with torch.no_grad():
        for i, raf in enumerate(rational_modules(model).values()):
            raf.numerator.add_(0.01 * scale * (i + 1))
            raf.denominator.sub_(0.02 * scale * (i + 1))


def _inputs():
    return {"input_ids": torch.tensor(INPUT_IDS), "attention_mask": torch.tensor(ATTENTION)}


def _package_outputs(folder, head) -> dict[str, np.ndarray]:
    model = load_pretrained(folder, head).eval()
    with torch.no_grad():
        out = model(**_inputs(), output_hidden_states=True)
    logits = out.logits if hasattr(out, "logits") else torch.stack([out.start_logits, out.end_logits])
    return {"logits": logits.numpy(), "hidden": out.hidden_states[-1].numpy()}


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict:
    """{"root", "tokenizer", (variant, head): {"src", "out", "expected"}}: saved and exported models."""
    from raft.data.sources import bert_tokenizer_from_vocab

    root = tmp_path_factory.mktemp("export")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = bert_tokenizer_from_vocab(root / "vocab.txt")
    found = {"root": root, "tokenizer": tokenizer}
    for variant, head in CASES + AUTHORS_CASES:
        torch.manual_seed(0)
        labels = {"num_labels": 3} if head == "sequence-classification" else {}
        options = AUTHORS if variant == "authors" else {}
        model = HEADS[head](make_config("raft" if variant == "authors" else variant, vocab_size=len(VOCAB),
                                        rational_layers="all,pooler", **SIZES, **labels, **options))
        _perturb(model)
        src, out = root / "src" / f"{variant}-{head}", root / f"exported-{variant}-{head}"
        model.save_pretrained(src)
        tokenizer.save_pretrained(src)
        assert cli(["export", str(src), str(out)]) == 0
        found[variant, head] = {"src": src, "out": out, "expected": _package_outputs(src, head)}
    return found


def _run_child(exports, mode: str, jobs: dict) -> tuple[dict, dict]:
    """Load `jobs` ({name: (folder, Auto class)}) in a child process; (summary, {name: outputs})."""
    work = exports["root"] / mode
    work.mkdir()
    path = REPO  # with-raft: the package importable
    if mode == "without-raft":  # a `raft` package that shadows the real one and fails to import
        path = work / "hide"
        (path / "raft").mkdir(parents=True)
        (path / "raft" / "__init__.py").write_text(f"raise ImportError({HIDE_RAFT!r})\n")
    (work / "child.py").write_text(CHILD)
    (work / "jobs.json").write_text(json.dumps([jobs, {k: v.tolist() for k, v in _inputs().items()}]))
    env = dict(os.environ, PYTHONPATH=str(path), HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(work / "hf_modules"),
               TOKENIZERS_PARALLELISM="false")
    argv = [sys.executable, str(work / "child.py"), mode, str(work / "jobs.json"), str(work),
            str(exports["raft", "masked-lm"]["src"])]
    proc = subprocess.run(argv, check=False, cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    outputs = {name: {kind: np.load(work / f"{name}.{kind}.npy") for kind in ("logits", "hidden")}
               for name in jobs}
    return json.loads((work / "summary.json").read_text()), outputs


def _own_head_jobs(exports, variants=("raft", "bert")) -> dict:
    return {f"{v}-{h}": (str(exports[v, h]["out"]), AUTO[h]) for v, h in CASES + AUTHORS_CASES if v in variants}


# ------------------------------------------------------------------ loading without raft
def test_loads_where_raft_cannot_be_imported(exports):
    jobs = _own_head_jobs(exports, ("raft", "bert", "authors"))
    mlm = str(exports["raft", "masked-lm"]["out"])  # any head from any export
    jobs.update({"cross-sequence-classification": (mlm, AUTO["sequence-classification"]),
                 "cross-question-answering": (mlm, AUTO["question-answering"])})
    summary, outputs = _run_child(exports, "without-raft", jobs)
    assert summary["raft_import_error"] == HIDE_RAFT and summary["raft_modules"] == []
    for variant, head in CASES + AUTHORS_CASES:
        name, expected = f"{variant}-{head}", exports[variant, head]["expected"]
        assert summary[name]["model_type"] == "raft-bert-hub"
        assert summary[name]["class"].startswith("transformers_modules.")
        np.testing.assert_allclose(outputs[name]["logits"], expected["logits"], rtol=0, atol=1e-6, err_msg=name)
    # a head the weights lack: encoder as trained; the classifier's pooler RAF starts at the init
    num, den = init_coefficients("gelu", (5, 4))
    trained = exports["raft", "masked-lm"]["expected"]["hidden"]
    for head in ("sequence-classification", "question-answering"):
        got = summary[f"cross-{head}"]
        np.testing.assert_allclose(outputs[f"cross-{head}"]["hidden"], trained, rtol=0, atol=1e-6)
        layers = [f"bert.encoder.layer.{i}.intermediate.intermediate_act_fn" for i in (0, 1)]
        assert sorted(got["rafs"]) == layers + ["bert.pooler.activation"] * (head == "sequence-classification")
    pooler = summary["cross-sequence-classification"]["rafs"]["bert.pooler.activation"]
    np.testing.assert_allclose(pooler[0], num, rtol=1e-6)
    np.testing.assert_allclose(pooler[1], den, rtol=1e-6)
    assert summary["tokens"] == exports["tokenizer"]("the cats sat on a mat")["input_ids"]
    np.testing.assert_allclose(np.load(exports["root"] / "without-raft" / "resaved.logits.npy"),
                               exports["raft", "sequence-classification"]["expected"]["logits"], rtol=0, atol=1e-6)


def test_loads_where_raft_is_imported(exports):
    summary, outputs = _run_child(exports, "with-raft", _own_head_jobs(exports, ("raft",)))
    assert summary["raft"].startswith(REPO)
    for head in HEADS:
        name = f"raft-{head}"
        assert summary[name]["model_type"] == "raft-bert-hub"
        assert summary[name]["class"].startswith("transformers_modules.")  # not raft.modeling's class
        np.testing.assert_allclose(outputs[name]["logits"], exports["raft", head]["expected"]["logits"],
                                   rtol=0, atol=1e-6, err_msg=name)
    assert "trust_remote_code" in summary["without_trust"]
    assert summary["package_config"] == "raft.modeling"  # the package's own folders still load natively


# ------------------------------------------------------------------ the template against the package
def test_exported_code_is_the_template_and_needs_only_torch_and_transformers(exports):
    code = (exports["raft", "masked-lm"]["out"] / "modeling_raft.py").read_text()
    assert code == Path(hub_modeling.__file__).read_text()
    roots = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module.split(".")[0])
    assert roots == {"__future__", "torch", "transformers"}


@pytest.mark.parametrize("degrees", [(5, 4), (3, 2)])
def test_template_formula_matches_the_package(degrees):
    m, n = degrees
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([torch.linspace(-8, 8, 401, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    a = torch.randn(m + 1, generator=gen)
    b = torch.randn(n, generator=gen)
    b[0] = 0.0  # copysign-style gradient at exactly 0
    b[-1] = -b[-1].abs()
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        xt = x.to(dtype)
        assert torch.equal(hub_modeling.rational(xt, a, b), rational(xt, a, b, backend="eager")), dtype
        torch.testing.assert_close(hub_modeling.rational(xt, a, b), rational(xt, a, b))  # the default backend
    grads = []
    for fn in (hub_modeling.rational, rational):
        xs, as_, bs = (t.detach().clone().requires_grad_() for t in (x.float(), a, b))
        fn(xs, as_, bs).pow(2).sum().backward()
        grads.append((xs.grad, as_.grad, bs.grad))
    assert grads[0][2][0] != 0
    for mine, theirs in zip(*grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant,head", CASES + AUTHORS_CASES)
def test_template_models_match_the_package(exports, variant, head):
    case = exports[variant, head]
    cls = getattr(hub_modeling, EXPORT_HEADS[head][0])
    hub = cls.from_pretrained(case["out"]).eval()
    package = load_pretrained(case["src"], head)
    assert hub.state_dict().keys() == package.state_dict().keys()
    assert [type(m).__name__ for m in hub.modules()] == [type(m).__name__ for m in package.modules()]
    with torch.no_grad():
        out = hub(**_inputs())
    logits = out.logits if hasattr(out, "logits") else torch.stack([out.start_logits, out.end_logits])
    np.testing.assert_allclose(logits.numpy(), case["expected"]["logits"], rtol=0, atol=1e-6)


def test_template_config_names_bad_coefficients():
    with pytest.raises(ValueError, match=r"rational_init_coefficients.*\[5, 4\].*'numerator': \[1.0\]"):
        hub_modeling.RaftConfig(raft_variant="raft", rational_layers=[0],
                                rational_init_coefficients={"numerator": [1.0], "denominator": [0.0] * 4})
    with pytest.raises(ValueError, match="'faft'"):
        hub_modeling.RaftConfig(raft_variant="faft")


# ------------------------------------------------------------------ the folder and the model card
def test_export_folder_and_config(exports):
    out = exports["raft", "sequence-classification"]["out"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                     "modeling_raft.py", "tokenizer.json", "tokenizer_config.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "raft-bert-hub" and config["architectures"] == ["RaftForSequenceClassification"]
    assert config["auto_map"] == {"AutoConfig": "modeling_raft.RaftConfig",
                                  "AutoModelForMaskedLM": "modeling_raft.RaftForMaskedLM",
                                  "AutoModelForSequenceClassification": "modeling_raft.RaftForSequenceClassification",
                                  "AutoModelForQuestionAnswering": "modeling_raft.RaftForQuestionAnswering"}
    num, den = init_coefficients("gelu", (5, 4))
    assert config["rational_init_coefficients"] == {"numerator": num, "denominator": den}
    assert config["rational_layers"] == [0, 1] and config["rational_pooler"] is True
    src = exports["raft", "sequence-classification"]["src"]
    assert (out / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()


def _front_matter(card: str) -> list[str]:
    assert card.startswith("---\n")
    return card.split("---\n")[1].splitlines()


def test_model_card_names_the_rafs_and_cites_the_paper(exports):
    card = (exports["raft", "sequence-classification"]["out"] / "README.md").read_text()
    meta = _front_matter(card)
    assert "library_name: transformers" in meta and "pipeline_tag: text-classification" in meta
    assert any(line.startswith("license: other  #") for line in meta) and "- custom_code" in meta
    assert "| feed-forward layers with a RAF (from 0) | 0, 1 (of 2) |" in card
    assert "| pooler RAF | yes |" in card and "| initialisation | `gelu` |" in card
    assert "| degrees (m, n) | (5, 4): 10 scalars per RAF, 30 in all |" in card
    model = load_pretrained(exports["raft", "sequence-classification"]["src"], "sequence-classification")
    for name, raf in rational_modules(model).items():  # the learned coefficients, one row per RAF
        assert f"| {name} | {raf.numerator[0].item():.4g} | {raf.numerator[1].item():.4g} |" in card
    assert 'AutoModelForSequenceClassification.from_pretrained("PATH_OR_REPO_ID", trust_remote_code=True)' in card
    for fragment in ("@inproceedings{", "Transformers with Learnable Activation Functions",
                     "Fang, Haishuo and Lee, Ji-Ung and Moosavi, Nafise Sadat and Gurevych, Iryna",
                     "Findings of the Association for Computational Linguistics: EACL 2023", "2208.14111"):
        assert fragment in card


def test_authors_variant_export(exports):
    """The options travel in config.json; the card names them; the stock exports have no such section."""
    out = exports["authors", "masked-lm"]["out"]
    config = json.loads((out / "config.json").read_text())
    assert (config["deepnorm"], config["embedding_layernorm"], config["weight_init"]) == (True, False, "authors")
    card = (out / "README.md").read_text()
    assert "## Architecture" in card and "α = (2·2)^¼ = 1.4142" in card
    assert "- no LayerNorm after the embeddings" in card and "`weight_init: authors`" in card
    assert "## Architecture" not in (exports["raft", "masked-lm"]["out"] / "README.md").read_text()


def test_model_card_of_masked_lm_and_bert(exports):
    card = (exports["raft", "masked-lm"]["out"] / "README.md").read_text()
    assert "pipeline_tag: fill-mask" in _front_matter(card)
    assert "| pooler RAF | yes; the masked-LM model has no pooler" in card
    assert "| layer.1 |" in card and "| pooler |" not in card
    bert = (exports["bert", "question-answering"]["out"] / "README.md").read_text()
    assert "pipeline_tag: question-answering" in _front_matter(bert)
    assert "GELU baseline" in bert and "Learned coefficients" not in bert and "2208.14111" in bert


# ------------------------------------------------------------------ errors
def _error(capsys, *argv) -> str:
    assert cli(["export", *map(str, argv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raft export: error: ")
    return err


def test_errors_name_the_path(exports, tmp_path, capsys):
    src = exports["bert", "masked-lm"]["src"]
    assert f"'{tmp_path / 'missing'}' does not exist" in _error(capsys, tmp_path / "missing", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    assert f"'{tmp_path / 'empty'}' is not a model folder: no config.json" in _error(capsys, tmp_path / "empty",
                                                                                     tmp_path / "o")
    from transformers import BertConfig

    BertConfig(vocab_size=10).save_pretrained(tmp_path / "stock")
    assert f"'{tmp_path / 'stock'}' holds a 'bert' model, not a raft model" in _error(
        capsys, tmp_path / "stock", tmp_path / "o")
    out = exports["raft", "masked-lm"]["out"]
    assert f"'{out}' is already a `raft export` output" in _error(capsys, out, tmp_path / "o")
    assert f"output folder '{out}' exists and is not empty; pass --force" in _error(capsys, src, out)
    assert "would replace the model folder" in _error(capsys, src, src.parent, "--force")
    assert not (tmp_path / "o").exists()


def test_force_replaces_the_output(exports, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier export")
    assert cli(["export", str(exports["bert", "masked-lm"]["src"]), str(out), "--force"]) == 0
    assert not (out / "stale.txt").exists() and (out / "modeling_raft.py").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left beside it
    assert f"-> {out}" in capsys.readouterr().out


def test_truncated_weights_are_named(exports, tmp_path, capsys):
    """The wording of fine-tuning's --pretrained check (`runtime.reading_weights`), before anything is written."""
    src = tmp_path / "src"
    shutil.copytree(exports["raft", "sequence-classification"]["src"], src)
    weights = src / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    err = _error(capsys, src, tmp_path / "out")
    assert err.startswith(f"raft export: error: cannot read the model weights {weights}: ")
    assert "(the file is truncated or corrupt; copy it again or re-run the command that saved the model)" in err
    assert "Traceback" not in err and "\n" not in err.rstrip("\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no output, no temporary folder


def test_full_disk_leaves_nothing_behind(exports, tmp_path, capsys, monkeypatch):
    from raft.train import runtime

    real = shutil.copyfile

    def copyfile(src, dst, *args, **kwargs):
        if Path(dst).name == "model.safetensors":  # the weights do not fit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src), None, str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copyfile)
    monkeypatch.setattr(runtime, "free_space", lambda folder: 3 * 2**20)
    out = tmp_path / "out"
    assert cli(["export", str(exports["bert", "masked-lm"]["src"]), str(out)]) == 2
    err = capsys.readouterr().err  # after the model loading's progress bar
    assert err.splitlines()[-1] == (f"raft export: error: no space left on device writing {out} "
                                    f"(3.0 MiB free on {runtime.mount_point(tmp_path)})")
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # neither the output nor the temporary folder beside it
