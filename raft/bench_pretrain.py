"""`raft bench`'s masked-LM training sections: our pretraining loop against Hugging Face's recipe,
and the sparse MLM head against the dense one.

Hugging Face recipe (`hf_trainer_rows`): what a user would run instead of `raft pretrain`, set up
as `run_mlm.py` does it -- `transformers.Trainer` + `BertForMaskedLM` +
`DataCollatorForLanguageModeling(mlm_probability=0.15)` with its default TrainingArguments (its
AdamW, gradient clipping at 1.0, dataloader), no evaluation, saving or logging -- against our loop
(`bench.bench_pretraining`, variant bert: the same stock BERT masked-LM, sizes, vocabulary,
batch, sequence length and precision) on one synthetic corpus in `raft prepare-corpus`'s format.
Each side runs `warmup` untimed steps (at least 1), then `steps` timed ones, one side after the
other; tokens/s = batch x sequence length x timed steps / their seconds (HF: from the end of the
last warm-up step to the end of the last step, data loading included, by a `TrainerCallback`).
Both sides count the token ids their encoder receives (a forward pre-hook), so a row shows what
each side trained on (not the compiled row). `ratio` is a side's tokens/s over the HF recipe's.
With ``compile``, a third row: our loop as `raft pretrain --compile` (its compilation falls in the
warm-up steps).

Sparse head (`sparse_head_rows`): forward+backward of a BERT masked-LM with the stock dense loss
(every position projected onto the vocabulary) and with the sparse head of pretraining
(`raft.train.mlm.sparse_mlm_loss`: masked positions only), interleaved as in the other sections,
with the same dropout masks, so their losses must be equal (`max_loss_diff`).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import TrainerCallback

from raft import bench
from raft.train import runtime

MLM_PROBABILITY = 0.15


@contextmanager
def encoder_tokens(model):
    """Yield a list that gets the number of token ids of every call of `model`'s encoder."""
    seen = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        seen.append(ids.numel())

    handle = model.base_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


# ------------------------------------------------------------------ our loop vs Hugging Face's recipe
def hf_trainer_rows(device, *, shape, batch: int, steps: int, warmup: int = 2, seq_len: int = 128,
                    vocab_size: int = 30522, precision: str = "auto", compile: bool = False,
                    echo=print) -> list[dict]:
    """Tokens/s of `raft pretrain`'s loop (variant bert; `compile`: also with --compile, whose
    compilation falls in the warm-up steps) and of Hugging Face's Trainer recipe on one synthetic
    corpus (`batch` x (warmup + steps) sequences: one epoch for the Trainer); a table."""
    warmup = max(1, warmup)
    with tempfile.TemporaryDirectory(prefix="raft-bench-") as tmp:
        corpus = bench.write_synthetic_corpus(Path(tmp) / "corpus", vocab_size=vocab_size, seq_len=seq_len,
                                              n_train=batch * (warmup + steps), n_validation=8)
        rows = [{"side": "raft pretrain" + (" --compile" if c else ""), **bench.bench_pretraining(
            "bert", device, corpus, shape=shape, batch=batch, steps=steps, warmup=warmup, count_tokens=not c,
            precision=precision, compile=c)} for c in ([False, True] if compile else [False])]
        hf = bench_hf_trainer(device, corpus, shape=shape, batch=batch, steps=steps, warmup=warmup,
                              precision=rows[0]["precision"])
    rows.append(hf)
    for row in rows:
        row["ratio"] = row["tokens_per_s"] / hf["tokens_per_s"]
    echo(f"\n{'side':<23} {'layers x hidden':>15} {'batch':>5} {'steps':>5} {'step ms':>9} {'tokens/s':>10} "
         f"{'ratio':>6}   (pretraining loop vs HF Trainer + BertForMaskedLM + DataCollatorForLanguageModeling, "
         f"{hf['precision']}, vocab {vocab_size})")
    for row in rows:
        size = f"{row['layers']} x {row['hidden']}"
        echo(f"{row['side']:<23} {size:>15} {row['batch']:>5} {row['steps']:>5}"
             f" {row['step_ms']:>9.1f} {row['tokens_per_s']:>10.0f} {row['ratio']:>6.2f}")
    return rows


class StepClock(TrainerCallback):
    """Stamps the end of every optimiser step of a `Trainer`."""

    def __init__(self, device):
        self.device, self.ends = device, []

    def on_step_end(self, args, state, control, **kwargs):
        bench._sync(self.device)
        self.ends.append(time.perf_counter())


def bench_hf_trainer(device, corpus, *, shape, batch: int, steps: int, warmup: int, precision: str) -> dict:
    """Tokens/s of `steps` Trainer steps after `warmup` (>= 1) untimed ones over `corpus`'s train ids,
    set up as run_mlm.py does (Trainer construction and warm-up excluded)."""
    import datasets
    import transformers as tf

    layers, hidden, heads, ffn = shape[:4]
    tokenizer = tf.AutoTokenizer.from_pretrained(Path(corpus) / "tokenizer")
    train = datasets.load_from_disk(str(Path(corpus) / "train"))
    seq_len = len(train[0]["input_ids"])
    torch.manual_seed(0)
    model = tf.BertForMaskedLM(tf.BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn, max_position_embeddings=seq_len, pad_token_id=tokenizer.pad_token_id))
    clock = StepClock(device)
    with tempfile.TemporaryDirectory(prefix="raft-bench-hf-") as out:
        args = tf.TrainingArguments(
            output_dir=out, per_device_train_batch_size=batch, max_steps=warmup + steps, eval_strategy="no",
            save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
            use_cpu=device.type == "cpu", bf16=precision == "bf16", fp16=precision == "fp16")
        if args.n_gpu > 1:
            raise runtime.UsageError("the HF Trainer rows need one visible GPU (Trainer would use DataParallel): "
                                     "set CUDA_VISIBLE_DEVICES")
        collator = tf.DataCollatorForLanguageModeling(tokenizer, mlm_probability=MLM_PROBABILITY)
        trainer = tf.Trainer(model=model, args=args, train_dataset=train, data_collator=collator, callbacks=[clock])
        trainer.remove_callback(tf.trainer_callback.PrinterCallback)  # the end-of-training metrics line
        with encoder_tokens(model) as seen:
            trainer.train()
    elapsed = clock.ends[-1] - clock.ends[warmup - 1]
    return {"side": "hf trainer", "variant": "bert", "layers": layers, "hidden": hidden, "batch": batch,
            "seq_len": seq_len, "steps": steps, "precision": precision, "optimizer": args.optim.value,
            "parameters": sum(p.numel() for p in model.parameters()),
            "tokens_per_step": sum(seen[warmup:]) / steps, "step_ms": 1e3 * elapsed / steps,
            "tokens_per_s": batch * seq_len * steps / elapsed}


# ------------------------------------------------------------------ sparse vs dense MLM head
def bench_sparse_head(name, device, *, repeats: int, warmup: int, quick: bool = False, seq_len: int = 128,
                      vocab_size: int = 30522, shape=None) -> dict:
    """Forward+backward ms of the dense and the sparse MLM loss of a BERT of model shape `name`
    (`bench.MODEL_SHAPES`, or `shape`) on one masked batch, same dropout masks for both."""
    from raft.modeling import RaftForMaskedLM, make_config
    from raft.train.mlm import sparse_mlm_loss

    layers, hidden, heads, ffn, batch, quick_batch = shape or bench.MODEL_SHAPES[name]
    batch = quick_batch if quick else batch
    torch.manual_seed(0)
    sizes = bench._model_sizes((layers, hidden, heads, ffn), seq_len, vocab_size)
    model = RaftForMaskedLM(make_config("bert", **sizes)).to(device).train()
    inputs, labels = bench._masked_batch(batch, seq_len, vocab_size, device)
    losses = {"dense": [], "sparse": []}
    loss_of = {"dense": lambda: model(input_ids=inputs, labels=labels).loss,
               "sparse": lambda: sparse_mlm_loss(model, inputs, labels)}

    def step(head):
        def run():
            torch.manual_seed(1)  # the same dropout masks in every call
            loss = loss_of[head]()
            loss.backward()
            model.zero_grad(set_to_none=True)
            losses[head].append(loss.item())
        return run

    samples = bench.measure({h: step(h) for h in loss_of}, repeats, warmup, device)
    med = {h: statistics.median(s) for h, s in samples.items()}
    return {"model": name, "layers": layers, "hidden": hidden, "batch": batch, "seq_len": seq_len,
            "vocab_size": vocab_size, "device": device.type, "masked_tokens": int((labels != -100).sum()),
            "dense_ms": 1e3 * med["dense"], "sparse_ms": 1e3 * med["sparse"],
            "ratio": med["dense"] / med["sparse"], "ratio_of_minima": min(samples["dense"]) / min(samples["sparse"]),
            "dense_tokens_per_s": batch * seq_len / med["dense"],
            "sparse_tokens_per_s": batch * seq_len / med["sparse"],
            "max_loss_diff": max(abs(a - b) for a, b in zip(losses["dense"], losses["sparse"])),
            "samples_s": samples}


def sparse_head_rows(names, device, *, repeats: int, warmup: int, quick: bool = False, seq_len: int = 128,
                     vocab_size: int = 30522, echo=print) -> list[dict]:
    """`bench_sparse_head` for each model shape name, printed as a table."""
    if names:
        echo(f"\n{'model':<10} {'batch':>5} {'dense':>9} {'sparse':>9} {'ratio':>6} {'(min)':>6} {'loss diff':>9}   "
             f"(ms, forward+backward; ratio: dense / sparse; medians of {repeats})")
    rows = []
    for name in names:
        row = bench_sparse_head(name, device, repeats=repeats, warmup=warmup, quick=quick, seq_len=seq_len,
                                vocab_size=vocab_size)
        rows.append(row)
        echo(f"{name:<10} {row['batch']:>5} {row['dense_ms']:>9.1f} {row['sparse_ms']:>9.1f} {row['ratio']:>6.2f}"
             f" {row['ratio_of_minima']:>6.2f} {row['max_loss_diff']:>9.1e}")
    return rows
