"""RAFT models on stock transformers: placement, save/load, init parity, optimiser groups, modes."""

from __future__ import annotations

import copy

import pytest
import torch

from raft.modeling import (
    RaftForMaskedLM,
    RaftForQuestionAnswering,
    RaftForSequenceClassification,
    export_rationals,
    load_pretrained,
    make_config,
    parse_layer_spec,
    rational_modules,
)
from raft.modes import MODES, apply_mode
from raft.optim import build_optimizer, build_scheduler, param_groups
from raft.rational import Rational, init_coefficients

SIZES = dict(vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
             intermediate_size=64, max_position_embeddings=32)


def _model(cls, variant, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(make_config(variant, **SIZES, **kw))


def _perturb_rafs(model):
    with torch.no_grad():
        for i, raf in enumerate(rational_modules(model).values()):
            raf.numerator.add_(0.01 * (i + 1))
            raf.denominator.sub_(0.02 * (i + 1))


@pytest.mark.parametrize(
    "spec,expected",
    [("all", ([0, 1, 2], False)), ("0-1", ([0, 1], False)), ("all,pooler", ([0, 1, 2], True)),
     ("0,2", ([0, 2], False)), ("none", ([], False)), ("pooler", ([], True)), (["1", "pooler"], ([1], True))],
)
def test_layer_spec(spec, expected):
    assert parse_layer_spec(spec, 3) == expected


@pytest.mark.parametrize("spec,fragment", [("0-99", "'0-99'"), ("2-1", "'2-1'"), ("first", "'first'"), ("12", "[12]")])
def test_bad_layer_spec_names_the_value(spec, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        parse_layer_spec(spec, 12)


def test_bad_variant_and_init():
    with pytest.raises(ValueError, match="'faft'"):
        make_config("faft", **SIZES)
    with pytest.raises(ValueError, match="'swishy'"):
        make_config("raft", rational_init="swishy", **SIZES)


def test_placement_follows_config():
    model = _model(RaftForSequenceClassification, "raft", rational_layers="0,2,pooler", num_labels=2)
    assert list(rational_modules(model)) == ["layer.0", "layer.2", "pooler"]
    assert not isinstance(model.bert.encoder.layer[1].intermediate.intermediate_act_fn, Rational)
    # independent modules, each initialised to the GELU fit
    rafs = list(rational_modules(model).values())
    assert len({id(r.numerator) for r in rafs}) == 3
    num, den = init_coefficients("gelu", (5, 4))
    assert torch.allclose(rafs[0].numerator, torch.tensor(num))
    assert model.config.num_rational_scalars == 30
    bert = _model(RaftForSequenceClassification, "bert", num_labels=2)
    assert rational_modules(bert) == {} and export_rationals(bert) == {}


@pytest.mark.parametrize("cls", [RaftForMaskedLM, RaftForSequenceClassification, RaftForQuestionAnswering])
def test_bert_and_raft_share_all_non_raf_initial_weights(cls):
    bert = _model(cls, "bert", seed=7).state_dict()
    raft = _model(cls, "raft", seed=7).state_dict()
    extra = sorted(set(raft) - set(bert))
    assert extra and all("intermediate_act_fn" in k or "pooler.activation" in k for k in extra)
    assert set(bert) <= set(raft)
    for key, value in bert.items():
        assert torch.equal(value, raft[key]), key


@pytest.mark.parametrize("cls,head", [(RaftForMaskedLM, "masked-lm"), (RaftForSequenceClassification, "sequence-classification")])
def test_save_load_round_trip_is_exact(tmp_path, cls, head):
    model = _model(cls, "raft", num_labels=3).eval()
    _perturb_rafs(model)
    ids = torch.randint(0, SIZES["vocab_size"], (2, 10))
    expected = model(ids).logits
    model.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path, head).eval()
    assert export_rationals(loaded) == export_rationals(model)
    assert torch.equal(loaded(ids).logits, expected)


def test_task_head_from_mlm_checkpoint_keeps_learned_rafs_and_inits_pooler(tmp_path):
    mlm = _model(RaftForMaskedLM, "raft")
    _perturb_rafs(mlm)
    mlm.save_pretrained(tmp_path)
    clf = load_pretrained(tmp_path, "sequence-classification", num_labels=2)
    learned, loaded = export_rationals(mlm), export_rationals(clf)
    for name in learned:  # layers: the pretrained coefficients
        assert loaded[name] == learned[name]
    num, den = init_coefficients("gelu", (5, 4))  # pooler: not in the MLM checkpoint -> GELU init
    assert loaded["pooler"]["numerator"] == pytest.approx(num, abs=1e-7)
    assert loaded["pooler"]["denominator"] == pytest.approx(den, abs=1e-7)


def test_load_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "nope", "masked-lm")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(tmp_path, "masked-lm")
    from transformers import BertConfig

    BertConfig(**SIZES).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a raft model"):
        load_pretrained(tmp_path, "masked-lm")
    with pytest.raises(ValueError, match="unknown head"):
        load_pretrained(tmp_path, "generation")


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_mode_parameter_counts():
    # 3 layers + pooler = 4 RAFs x 10 scalars; head = classifier 32*2 + 2
    head = 32 * 2 + 2
    raft = _model(RaftForSequenceClassification, "raft", num_labels=2)
    total = sum(p.numel() for p in raft.parameters())
    assert apply_mode(raft, "full")["trainable_parameters"] == total
    assert apply_mode(raft, "frozen_rafs")["trainable_parameters"] == total - 40
    assert not any("act" in n for n in _trainable(raft))
    summary = apply_mode(raft, "raf_head")
    assert summary["trainable_parameters"] == 40 + head and summary["rational_scalars"] == 40
    assert _trainable(raft) == {n for n, _ in raft.named_parameters() if "activation" in n or "act_fn" in n or n.startswith("classifier")}

    bert = _model(RaftForSequenceClassification, "bert", num_labels=2)
    bias = apply_mode(bert, "bias_head", seed=3)
    assert bias["bias_scalars"] == 40 and bias["trainable_parameters"] == summary["trainable_parameters"]


def test_mode_errors():
    bert = _model(RaftForSequenceClassification, "bert", num_labels=2)
    raft = _model(RaftForSequenceClassification, "raft", num_labels=2)
    with pytest.raises(ValueError, match="'lora'"):
        apply_mode(raft, "lora")
    with pytest.raises(ValueError, match="needs a RAFT"):
        apply_mode(bert, "raf_head")
    with pytest.raises(ValueError, match="GELU baseline"):
        apply_mode(raft, "bias_head")
    assert set(MODES) == {"full", "frozen_rafs", "raf_head", "bias_head"}


def test_bias_head_trains_exactly_the_chosen_entries():
    bert = _model(RaftForSequenceClassification, "bert", num_labels=2)
    budget = apply_mode(bert, "bias_head", seed=5)["bias_scalars"]
    before = {n: p.detach().clone() for n, p in bert.named_parameters()}
    opt = build_optimizer(bert, lr=1e-2, weight_decay=0.1)
    ids = torch.randint(0, SIZES["vocab_size"], (4, 8))
    for _ in range(2):
        loss = bert(ids, labels=torch.tensor([0, 1, 0, 1])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    changed = {n: int((p.detach() != before[n]).sum()) for n, p in bert.named_parameters()}
    assert sum(v for n, v in changed.items() if n.startswith("bert.")) == budget
    assert all(n.endswith("bias") for n, v in changed.items() if v and n.startswith("bert."))
    assert changed["classifier.weight"] == 64


def test_optimizer_groups_and_schedules():
    model = _model(RaftForMaskedLM, "raft")
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.01, rational_lr=5e-3, rational_weight_decay=0.1, betas=(0.9, 0.98))
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["rational"]["lr"] == 5e-3 and groups["rational"]["weight_decay"] == 0.1
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["decay"]["weight_decay"] == 0.01
    assert sum(p.numel() for p in groups["rational"]["params"]) == 30  # MLM: no pooler
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in groups["no_decay"]["params"])
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))

    sched = build_scheduler(opt, warmup_steps=10, total_steps=110)
    lrs = []
    for _ in range(110):
        lrs.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    assert lrs[0]["decay"] == pytest.approx(1e-4) and lrs[0]["rational"] == pytest.approx(5e-4)
    assert lrs[10]["decay"] == pytest.approx(1e-3) and lrs[10]["rational"] == pytest.approx(5e-3)
    assert lrs[60]["decay"] == pytest.approx(5e-4) and lrs[60]["rational"] == pytest.approx(5e-3)
    assert lrs[109]["rational"] == pytest.approx(5e-3) and lrs[109]["decay"] == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="'cosine'"):
        build_scheduler(opt, 0, 10, rational_schedule="cosine")


def test_the_optimizer_is_torchs_fused_adamw_where_it_can_be_and_steps_like_the_default_one():
    torch.manual_seed(0)
    model = _model(RaftForMaskedLM, "raft")
    twin = copy.deepcopy(model)
    fused = build_optimizer(model, lr=1e-2, weight_decay=0.01, rational_lr=5e-3, rational_weight_decay=0.1)
    assert fused.defaults["fused"] is True
    plain = torch.optim.AdamW(param_groups(twin, 0.01, 5e-3, 0.1), lr=1e-2, eps=1e-8)  # for-each
    ids = torch.randint(0, SIZES["vocab_size"], (4, 8))
    for net, opt in ((model, fused), (twin, plain)):
        for step in range(3):
            torch.manual_seed(step)  # the same dropout masks
            net(ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):  # steps of 1e-2, equal to 1e-5
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=name)  # (key biases: zero gradients, noise)
    with torch.device("meta"):  # a device without the fused kernel: the default optimizer
        meta = _model(RaftForMaskedLM, "bert")
    assert build_optimizer(meta, lr=1e-3).defaults["fused"] is False
