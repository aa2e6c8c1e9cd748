"""`raft export MODEL_DIR OUTPUT_DIR`: a raft model folder -> a Hub-ready folder that loads without raft.

MODEL_DIR is a folder written by `save_pretrained` of a raft model: pretraining's
`results/pretrain/{variant}/model`, or a fine-tuned model (`--save-model`) with a classification
or QA head; config.json (model_type "raft-bert"), safetensors weights, tokenizer files.
OUTPUT_DIR gets
    config.json        the model's config with model_type "raft-bert-hub", the resolved initial RAF
                       coefficients and `auto_map`: AutoConfig and AutoModelForMaskedLM /
                       SequenceClassification / QuestionAnswering all point into modeling_raft.py,
                       so any head loads from any export
    modeling_raft.py   `raft/hub_modeling.py`, verbatim: torch + transformers only (why one template
                       and not generated code, and why a model_type of its own: its docstring)
    model*.safetensors the weights, byte for byte (the parameter names are the same)
    tokenizer files    copied as they are
    README.md          model card: RAF placement, degrees, init, learned coefficients, loading,
                       citation; licence left to the user (`license: other` + a comment)
so `AutoModelForMaskedLM.from_pretrained(OUTPUT_DIR, trust_remote_code=True)` works anywhere.
The folder is assembled under a temporary name beside OUTPUT_DIR and renamed into place, so a
failed export (a full disk too: "no space left on device writing OUTPUT_DIR (... free on ...)")
leaves nothing behind; a non-empty OUTPUT_DIR is replaced only with --force. A truncated or
corrupt weights file is named before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from raft import hub_modeling, modeling
from raft.analysis import shapes
from raft.rational import init_coefficients
from raft.train.runtime import UsageError, check_weights, disk_full_names, run_command

PROG = "raft export"
HUB_MODULE = "modeling_raft"  # the template's name in the export
HUB_TEMPLATE = Path(hub_modeling.__file__)
# head -> (architecture, Auto class, pipeline tag, in words); the same class names in both modules
HEADS = {
    "masked-lm": ("RaftForMaskedLM", "AutoModelForMaskedLM", "fill-mask", "masked-LM"),
    "sequence-classification": ("RaftForSequenceClassification", "AutoModelForSequenceClassification",
                                "text-classification", "sequence-classification"),
    "question-answering": ("RaftForQuestionAnswering", "AutoModelForQuestionAnswering", "question-answering",
                           "question-answering"),
}
AUTO_MAP = {"AutoConfig": f"{HUB_MODULE}.RaftConfig",
            **{auto: f"{HUB_MODULE}.{arch}" for arch, auto, *_ in HEADS.values()}}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "added_tokens.json", "chat_template.jinja")
CITATION = """\
@inproceedings{fang-etal-2023-transformers,
  title     = {Transformers with Learnable Activation Functions},
  author    = {Fang, Haishuo and Lee, Ji-Ung and Moosavi, Nafise Sadat and Gurevych, Iryna},
  booktitle = {Findings of the Association for Computational Linguistics: EACL 2023},
  year      = {2023},
  url       = {https://arxiv.org/abs/2208.14111}
}"""


def add_arguments(parser) -> None:
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR",
                        help="folder written by save_pretrained of a raft model (e.g. results/pretrain/raft/model)")
    parser.add_argument("output_dir", type=Path, metavar="OUTPUT_DIR",
                        help="the Hub-ready folder to write (created; must be empty unless --force)")
    parser.add_argument("--force", action="store_true", help="replace OUTPUT_DIR when it exists and is not empty")


def main(args) -> int:
    return run_command(PROG, _run, args)


def _run(args) -> int:
    out = export(args.model_dir, args.output_dir, force=args.force)
    print(f"{PROG}: {args.model_dir} -> {out}; load it with "
          f"AutoModelFor...from_pretrained({str(out)!r}, trust_remote_code=True)")
    return 0


def export(model_dir, output_dir, *, force: bool = False) -> Path:
    """Write the Hub-ready folder for `model_dir` to `output_dir`; a problem is a `UsageError`."""
    source, out = Path(model_dir), Path(output_dir)
    config, head = read_source(source)
    weights = weight_files(source)
    _check_output(out, source, force)
    check_weights(weights, remedy="copy it again or re-run the command that saved the model")
    hub, model = hub_config(config), _load(source, head)
    final = out.resolve()
    tmp = final.parent / f".{final.name}.export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with disk_full_names(out):  # the temporary folder is gone before the free space is measured
        try:
            tmp.mkdir(parents=True)
            (tmp / "config.json").write_text(json.dumps(hub, indent=2, sort_keys=True) + "\n")
            shutil.copyfile(HUB_TEMPLATE, tmp / f"{HUB_MODULE}.py")
            for f in weights + _tokenizer_files(source):
                shutil.copyfile(f, tmp / f.name)
            (tmp / "README.md").write_text(model_card(hub, head, model))
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------ the input
def read_source(model_dir: Path) -> tuple[dict, str]:
    """(config.json as a dict, head) of a raft model folder; a `UsageError` naming what is wrong."""
    if not model_dir.is_dir():
        raise UsageError(f"model folder {str(model_dir)!r} does not exist (or is not a folder)")
    path = model_dir / "config.json"
    hint = "expected a folder written by save_pretrained of a raft model, e.g. results/pretrain/raft/model"
    if not path.is_file():
        raise UsageError(f"{str(model_dir)!r} is not a model folder: no config.json ({hint})")
    config = _read_json(path)
    model_type = config.get("model_type")
    if model_type == hub_modeling.RaftConfig.model_type:
        raise UsageError(f"{str(model_dir)!r} is already a `raft export` output (model_type {model_type!r}); "
                         f"export the raft model folder it came from")
    if model_type != modeling.RaftConfig.model_type:
        raise UsageError(f"{str(model_dir)!r} holds a {model_type!r} model, not a raft model "
                         f"(model_type {modeling.RaftConfig.model_type!r}; {hint})")
    architectures = config.get("architectures") or [None]
    by_arch = {arch: head for head, (arch, *_) in HEADS.items()}
    if architectures[0] not in by_arch:
        raise UsageError(f"{str(path)!r} names the architecture {architectures[0]!r}; "
                         f"expected one of {sorted(by_arch)}")
    return config, by_arch[architectures[0]]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{str(path)!r} holds a JSON {type(data).__name__}, not an object")
    return data


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors weights: model.safetensors, or the index and its shards."""
    single, index = model_dir / "model.safetensors", model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        missing = [s for s in shards if not (model_dir / s).is_file()]
        if missing:
            raise UsageError(f"{str(index)!r} lists shards missing from {str(model_dir)!r}: {', '.join(missing)}")
        return [index] + [model_dir / s for s in shards]
    if single.is_file():
        return [single]
    raise UsageError(f"{str(model_dir)!r} has no safetensors weights (model.safetensors or "
                     f"model.safetensors.index.json)")


def _tokenizer_files(model_dir: Path) -> list[Path]:
    files = [model_dir / name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    if not files:
        print(f"{PROG}: note: no tokenizer files in {str(model_dir)!r}; the export has none", file=sys.stderr)
    return files


def _check_output(out: Path, source: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {str(out)!r} exists and is not a folder")
    resolved, src = out.resolve(), source.resolve()
    if resolved == src or resolved in src.parents:
        raise UsageError(f"output {str(out)!r} would replace the model folder {str(source)!r}; pick another folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"output folder {str(out)!r} exists and is not empty; pass --force to replace it")


def _load(source: Path, head: str):
    try:
        return modeling.HEADS[head].from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the raft model in {str(source)!r}: {exc}") from None


# ------------------------------------------------------------------------------ the output
def hub_config(config: dict) -> dict:
    """The exported config.json: the source's, retyped, with `auto_map` and the initial coefficients."""
    out = dict(config, model_type=hub_modeling.RaftConfig.model_type, auto_map=dict(AUTO_MAP))
    if _has_rafs(out):
        init = out.get("rational_init", "gelu")
        try:
            num, den = init_coefficients(init if isinstance(init, str) else tuple(init),
                                         tuple(out.get("rational_degrees", (5, 4))))
        except ValueError as exc:
            raise UsageError(f"rational_init {init!r} of the model: {exc}") from None
        out["rational_init_coefficients"] = {"numerator": num, "denominator": den}
    return out


def model_card(config: dict, head: str, model) -> str:
    """README.md for the exported `config` (`hub_config`): YAML front matter, the RAFs, the learned
    coefficients of `model`, how to load, citation."""
    _, auto_class, tag, words = HEADS[head]
    return "\n".join([
        "---", "library_name: transformers",
        "license: other  # placeholder: set the licence of these weights (and check the data's licences)",
        "tags:", "- raft", "- bert", "- rational-activation-functions", "- custom_code",
        f"pipeline_tag: {tag}", "---", "",
        "# RAFT: BERT with learnable rational activation functions" if _has_rafs(config)
        else "# BERT: the GELU baseline of a RAFT study", "",
        (f"A {_size(config)} BERT with a {words} head, exported by `raft export` from a RAFT study "
         "(Fang et al., 2023), which replaces the GELU of BERT's feed-forward layers (and optionally the "
         "pooler's tanh) with learnable rational activation functions (RAFs), one per layer:"),
        "",
        "    F(x) = (a0 + a1 x + ... + am x^m) / (1 + |b1| |x| + |b2| |x|^2 + ... + |bn| |x|^n)", "",
        *_placement(config, head), *_architecture(config), *_coefficients(config, model), *_usage(auto_class),
        "## Citation", "", "```bibtex", CITATION, "```", "",
    ])


def _size(config: dict) -> str:
    return (f"{config.get('num_hidden_layers')}-layer (hidden {config.get('hidden_size')}, "
            f"{config.get('num_attention_heads')} heads, feed-forward {config.get('intermediate_size')})")


def _has_rafs(config: dict) -> bool:
    return bool(config.get("rational_layers") or config.get("rational_pooler"))


def _placement(config: dict, head: str) -> list[str]:
    layers = config.get("rational_layers") or []
    if not _has_rafs(config):
        return ["## Rational activations", "",
                ("None: this is the GELU baseline (variant `bert`, the paper's FAFT); the model code "
                 "is the same."), ""]
    m, n = config.get("rational_degrees", (5, 4))
    pooler = "yes" if config.get("rational_pooler") else "no (tanh)"
    if config.get("rational_pooler") and head != "sequence-classification":
        pooler += (f"; the {HEADS[head][3]} model has no pooler: a sequence-classification head "
                   "loaded from this export starts its pooler RAF at the initial coefficients")
    count = len(layers) + int(bool(config.get("rational_pooler")))
    return ["## Rational activations", "", "| | |", "|---|---|",
            f"| variant | `{config.get('raft_variant')}` |",
            (f"| feed-forward layers with a RAF (from 0) | {', '.join(map(str, layers)) or 'none'} "
             f"(of {config.get('num_hidden_layers')}) |"),
            f"| pooler RAF | {pooler} |",
            f"| degrees (m, n) | ({m}, {n}): {m + 1 + n} scalars per RAF, {count * (m + 1 + n)} in all |",
            f"| initialisation | `{config.get('rational_init')}` |", ""]


def _architecture(config: dict) -> list[str]:
    """The authors' BERT options when the model uses them (none: stock post-LN BERT, no lines)."""
    n = config.get("num_hidden_layers")
    lines = []
    if config.get("deepnorm"):
        lines.append(f"- DeepNorm residuals: each sublayer computes LayerNorm(α·x + f(x)), α = (2·{n})^¼ "
                     f"= {(2 * n) ** 0.25:.4f}")
    if config.get("embedding_layernorm") is False:
        lines.append("- no LayerNorm after the embeddings")
    if config.get("weight_init", "bert") != "bert":
        lines.append(f"- initialised with `weight_init: {config['weight_init']}`")
    return ["## Architecture", "", "Post-LN BERT with these options of the authors' code (UKPLab/2022-RAFT):", "",
            *lines, ""] if lines else []


def _coefficients(config: dict, model) -> list[str]:
    rafs = modeling.export_rationals(model)
    if not rafs:
        return []
    m, n = config.get("rational_degrees", (5, 4))
    init = config["rational_init_coefficients"]
    names = [f"a{k}" for k in range(m + 1)] + [f"b{j}" for j in range(1, n + 1)]
    lines = ["### Learned coefficients", "",
             (f"As stored (F uses |b_j|); closest standard activation g (affine fit α g(β x + γ) + δ) "
              f"and max |F - F_init| on [{shapes.X_MIN:g}, {shapes.X_MAX:g}]."), "",
             "| RAF | " + " | ".join(names) + " | closest | max distance from init |",
             "|---" * (len(names) + 3) + "|"]
    for name, coef in rafs.items():
        closest = shapes.closest_for_coefficients(coef)
        values = " | ".join(f"{v:.4g}" for v in coef["numerator"] + coef["denominator"])
        lines.append(f"| {name} | {values} | {closest['closest']} (rel. error {closest['rel_error']:.2g}) | "
                     f"{shapes.max_abs_distance(coef, init):.3g} |")
    return lines + [""]


def _usage(auto_class: str) -> list[str]:
    return ["## How to load", "",
            ("The model code (`modeling_raft.py`) needs only `torch` and `transformers` (5.x); "
             "`trust_remote_code=True` runs it:"), "",
            "```python", f"from transformers import AutoTokenizer, {auto_class}", "",
            'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO_ID")',
            f'model = {auto_class}.from_pretrained("PATH_OR_REPO_ID", trust_remote_code=True)', "```", "",
            ("`AutoModelForMaskedLM`, `AutoModelForSequenceClassification` and "
             "`AutoModelForQuestionAnswering` all load this folder; a head that the weights do not "
             "contain is newly initialised (fine-tune it)."), ""]
