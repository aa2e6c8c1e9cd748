"""The `raft` command line: one sub-command per workflow step.

Each sub-command lives in its own module, which defines ``add_arguments(parser)``
and ``main(args) -> int``. Modules are imported only when their command runs, so
``raft --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("raft.bench", "benchmark the rational kernel and RAFT vs BERT training steps"),
    "device-check": ("raft.device_check", "check the GPU path in one go: kernels, bench, pretraining, fine-tuning"),
    "fit-inits": ("raft.fit", "refit the initial rational coefficients (writes raft/inits.json)"),
    "prepare-corpus": ("raft.data.corpus", "clean, split, tokenize and pack a pretraining corpus"),
    "pretrain": ("raft.train.pretrain", "masked-LM pretraining of a BERT or RAFT model"),
    "finetune-glue": ("raft.train.finetune_glue", "fine-tune on one GLUE task, one N, one seed"),
    "finetune-squad": ("raft.train.finetune_squad", "fine-tune on SQuAD v1.1, one N, one seed"),
    "zeroshot": ("raft.train.zeroshot", "score a fine-tuned MNLI / SQuAD model on SNLI / TriviaQA, no training"),
    "aggregate": ("raft.analysis.aggregate", "collect result files into tidy tables"),
    "normalize-notebook": ("raft.analysis.notebook", "make an executed notebook byte-stable"),
    "export": ("raft.export", "write a Hub-ready model folder that loads without raft (trust_remote_code)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: raft <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `raft <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"raft: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"raft {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
