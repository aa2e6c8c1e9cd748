"""`raft normalize-notebook PATH`: make an executed notebook byte-stable.

Rendering the same template on the same inputs twice must give identical bytes, so that
Snakemake (and a reader's diff) sees no change. This removes what papermill, nbclient and
the kernel add that varies from run to run:

- papermill's timestamps, durations, status and paths (notebook and cell metadata; the
  notebook keeps ``metadata.papermill.parameters``);
- nbclient's execution timing (``cell.metadata.execution``);
- random cell ids -> ``cell-000``, ``cell-001``, ... (by position);
- the kernel's Python version (``metadata.language_info.version``);
- stderr stream outputs (warnings, progress bars; kept with ``--keep-stderr``);
- memory addresses in plain-text reprs (``at 0x7f...`` -> ``at 0x…``).

With ``--html OUT`` the normalised notebook is also exported to HTML (nbconvert's
HTMLExporter, default template), which is then byte-stable as well.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

_ADDR = re.compile(r" at 0x[0-9a-fA-F]+")
_KEEP_PAPERMILL = ("parameters", "default_parameters")
_DROP_LANGUAGE_INFO = ("version",)


def _scrub_text(value):
    if isinstance(value, str):
        return _ADDR.sub(" at 0x…", value)
    if isinstance(value, list):
        return [_scrub_text(v) for v in value]
    return value


def normalize(nb: nbformat.NotebookNode, *, keep_stderr: bool = False) -> nbformat.NotebookNode:
    """Normalise a notebook in place and return it."""
    md = nb.setdefault("metadata", {})
    pm = md.get("papermill")
    if isinstance(pm, dict):
        kept = {k: pm[k] for k in _KEEP_PAPERMILL if k in pm}
        if kept:
            md["papermill"] = kept
        else:
            md.pop("papermill")
    li = md.get("language_info")
    if isinstance(li, dict):
        for k in _DROP_LANGUAGE_INFO:
            li.pop(k, None)
    md.pop("widgets", None)
    if nb.get("nbformat", 4) == 4 and nb.get("nbformat_minor", 0) < 5:
        nb["nbformat_minor"] = 5
    for i, cell in enumerate(nb.get("cells", [])):
        cell["id"] = f"cell-{i:03d}"
        cmd = cell.setdefault("metadata", {})
        cmd.pop("papermill", None)
        cmd.pop("execution", None)
        cmd.pop("ExecuteTime", None)
        if cell.get("cell_type") != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                if out.get("name") == "stderr" and not keep_stderr:
                    continue
                out["text"] = _scrub_text(out.get("text", ""))
            elif out.get("output_type") in ("execute_result", "display_data"):
                data = out.get("data", {})
                if "text/plain" in data:
                    data["text/plain"] = _scrub_text(data["text/plain"])
            outputs.append(out)
        # merge consecutive stream outputs of the same name (their split depends on timing)
        merged: list = []
        for out in outputs:
            if (merged and out.get("output_type") == "stream" and merged[-1].get("output_type") == "stream"
                    and merged[-1].get("name") == out.get("name")):
                a, b = merged[-1]["text"], out["text"]
                merged[-1]["text"] = ("".join(a) if isinstance(a, list) else a) + (
                    "".join(b) if isinstance(b, list) else b)
            else:
                merged.append(out)
        cell["outputs"] = merged
    return nb


def normalize_file(path, *, output=None, html=None, keep_stderr: bool = False) -> Path:
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    normalize(nb, keep_stderr=keep_stderr)
    out = Path(output) if output else path
    text = nbformat.writes(nb)
    if not text.endswith("\n"):
        text += "\n"
    out.write_text(text, encoding="utf-8")
    if html:
        write_html(nb, html)
    return out


def write_html(nb, html_path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(body, encoding="utf-8")
    return html_path


def add_arguments(parser) -> None:
    parser.add_argument("path", help="executed notebook (.ipynb), rewritten in place")
    parser.add_argument("--output", default=None, help="write the normalised notebook here instead")
    parser.add_argument("--html", default=None, help="also export the normalised notebook to this HTML file")
    parser.add_argument("--keep-stderr", action="store_true", help="keep stderr stream outputs")


def main(args) -> int:
    if not Path(args.path).is_file():
        print(f"raft normalize-notebook: no such notebook: {args.path}", file=__import__("sys").stderr)
        return 1
    normalize_file(args.path, output=args.output, html=args.html, keep_stderr=args.keep_stderr)
    return 0
