"""Render every result notebook with papermill on a small synthetic results/ tree, export to
HTML, normalise, and check content and byte-stability of a second render.

Mirrors what the workflow runs per notebook (from the repository root):

    papermill notebooks/NAME.ipynb results/notebooks/NAME.ipynb -k python3 \
        -p results_dir results -p figures_dir results/figures --no-progress-bar
    raft normalize-notebook results/notebooks/NAME.ipynb --html results/notebooks/NAME.html
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from test_analysis_synthetic import make_results

from raft.analysis import notebook

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["pretraining", "glue", "squad", "param_efficient", "shapes", "zeroshot"]
FIGURES = {
    "pretraining": ["curves", "raf_evolution"],
    "glue": ["scores", "delta"],
    "squad": ["em", "f1", "delta"],
    "param_efficient": ["scores", "delta"],
    "zeroshot": ["scores"],
    "shapes": ["pretrained", "finetuned_cola", "finetuned_mrpc", "finetuned_mnli", "tasks_n100",
               "tasks_nfull", "movement"],
}
pytestmark = pytest.mark.timeout(300)


def _ensure_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user", "--name", "python3"],
                       check=True, capture_output=True)


def _env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONHASHSEED", None)  # random per process, as in the workflow: order must not depend on it
    env.update({"MPLBACKEND": "Agg", "TQDM_DISABLE": "1",
                "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
    return env


def _render(name: str, cwd: Path, out_dir: Path) -> tuple[Path, Path]:
    out = out_dir / f"{name}.ipynb"
    cmd = [sys.executable, "-m", "papermill", str(REPO / "notebooks" / f"{name}.ipynb"), str(out),
           "-k", "python3", "-p", "results_dir", "results", "-p", "figures_dir", "results/figures",
           "--no-progress-bar", "--log-level", "WARNING"]
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    html = out.with_suffix(".html")
    notebook.normalize_file(out, html=html)
    return out, html


def _render_all(cwd: Path, out_dir: Path) -> dict[str, tuple[Path, Path]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {n: pool.submit(_render, n, cwd, out_dir) for n in NOTEBOOKS}
        return {n: f.result() for n, f in futures.items()}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    _ensure_kernel()
    root = tmp_path_factory.mktemp("nb")
    make_results(root / "results", layers=3, constant_tasks=("cola",), zeroshot=True)  # CoLA N=100: constant predictions
    first = _render_all(root, root / "render1")
    figures = {p.relative_to(root): p.read_bytes() for p in sorted((root / "results/figures").rglob("*.png"))}
    first_bytes = {n: (a.read_bytes(), b.read_bytes()) for n, (a, b) in first.items()}
    second = _render_all(root, root / "render2")
    return root, first, first_bytes, second, figures


def test_templates_have_parameters_cell():
    for name in NOTEBOOKS:
        nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1, name
        assert params[0].source == 'results_dir = "results"\nfigures_dir = "results/figures"'
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), name
        assert [c["id"] for c in nb.cells] == [f"cell-{i:03d}" for i in range(len(nb.cells))]


def test_html_has_tables_findings_and_figures(rendered):
    root, first, _, _, figures = rendered
    for name, (_, html_path) in first.items():
        html = html_path.read_text()
        assert "Findings" in html, name
        assert "Traceback" not in html, name
        n_img = len(re.findall(r'<img [^>]*src="data:image/png;base64,', html))
        assert n_img >= len(FIGURES[name]), (name, n_img)
        for fig in FIGURES[name]:
            assert Path("results/figures") / name / f"{fig}.png" in figures, (name, fig)
        assert "<table" in html, name
    for name in ("glue", "squad"):
        html = first[name][1].read_text()
        assert "BERT (FAFT)</th>" in html and "RAFT</th>" in html
        assert "N = 100" in html and "N = full" in html
    squad = first["squad"][1].read_text()
    assert "Both variants used the same windows: 384 tokens (doc_stride 128) at N = 100 and full" in squad
    assert "positions 128..383 were never trained during pretraining (pretraining sequences had 128 tokens)" in squad
    assert "window (max_seq_length)</th>" in squad
    glue = first["glue"][1].read_text()
    assert "MNLI-m†‡" in glue and "MNLI-mm†‡" in glue and "GLUE average" in glue
    assert "held-out substitute" in glue and "few paired seeds" in glue
    eff = first["param_efficient"][1].read_text()
    assert "RAFT RAF+head</th>" in eff and "BERT bias+head</th>" in eff and "1,666 / 1,679" in eff
    # runs that predicted one class for every test example: said in the findings, marked in the tables
    assert ("CoLA N = 100: 3 of 3 BERT runs and 3 of 3 RAFT runs predicted one class for every test example"
            in glue) and "measure the class balance of the test set" in glue
    assert "<td>CoLA§</td>" in glue and "§ rests on runs whose predictions were constant" in glue
    assert "The GLUE average includes such runs at N = 100" in glue
    assert ("CoLA N = 100: 3 of 3 BERT bias+head runs and 3 of 3 RAFT RAF+head runs predicted one class "
            "for every test example") in eff and "<td>CoLA§</td>" in eff
    zs = first["zeroshot"][1].read_text()  # TriviaQA's three scores, and which one the paper likely shows
    assert "<strong>Which TriviaQA score the paper likely shows.</strong>" in zs
    assert "<td>TriviaQA all pairs (SQuAD EM/F1)¶</td>" in zs and "<td>TriviaQA HasAns (SQuAD EM/F1)¶</td>" in zs
    pre = first["pretraining"][1].read_text()
    assert "BERT (FAFT)</td>" in pre and "RAFT</td>" in pre and "11.750" in pre
    shapes_html = first["shapes"][1].read_text()
    assert "published RAFT checkpoint (Fang et al. 2023)" in shapes_html and "2208.14111" in shapes_html
    assert "closest activation" in shapes_html


def test_rerender_is_byte_identical(rendered):
    root, _, first_bytes, second, figures = rendered
    for name, (nb_path, html_path) in second.items():
        assert nb_path.read_bytes() == first_bytes[name][0], f"{name}.ipynb differs between renders"
        assert html_path.read_bytes() == first_bytes[name][1], f"{name}.html differs between renders"
    again = {p.relative_to(root): p.read_bytes() for p in sorted((root / "results/figures").rglob("*.png"))}
    assert again == figures


def test_executed_notebooks_are_normalised(rendered):
    _, first, _, _, _ = rendered
    for name, (nb_path, _) in first.items():
        nb = nbformat.read(nb_path, as_version=4)
        assert set(nb.metadata.get("papermill", {})) <= {"parameters", "default_parameters"}
        assert "version" not in nb.metadata.get("language_info", {})
        for i, cell in enumerate(nb.cells):
            assert cell["id"] == f"cell-{i:03d}"
            assert "papermill" not in cell.metadata and "execution" not in cell.metadata
            for out in cell.get("outputs", []):
                assert out["output_type"] != "error", name


@pytest.mark.parametrize("which", ["empty", "pretrain-only"])
def test_templates_run_on_missing_studies(tmp_path, monkeypatch, which):
    """The code cells run in-process on an empty / partial results tree (no crash, no figures
    for what does not exist)."""
    import matplotlib

    from test_analysis_synthetic import write_pretrain

    results = tmp_path / "results"
    results.mkdir()
    if which == "pretrain-only":
        write_pretrain(results, "bert", perplexity=12.0)
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *objs, **kw: shown.extend(objs))
    for name in NOTEBOOKS:
        nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        ns = {}
        for cell in nb.cells:
            if cell.cell_type == "code":
                src = cell.source
                if "parameters" in cell.metadata.get("tags", []):
                    src = f"results_dir = {str(results)!r}\nfigures_dir = {str(tmp_path / 'figures')!r}"
                exec(compile(src, f"{name}.ipynb", "exec"), ns)
    assert shown
    pngs = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    # the published reference shapes are always drawn
    if which == "empty":
        assert pngs == ["figures/shapes/pretrained.png"]
    else:
        assert pngs == ["figures/pretraining/curves.png", "figures/shapes/pretrained.png"]
    matplotlib.pyplot.close("all")
