"""RAFT models on stock transformers: placement, save/load, init parity, optimiser groups, modes."""

from __future__ import annotations

import copy
import math

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


# ------------------------------------------------------------------ the authors' BERT variant
def _layer_by_hand(layer, x, alpha, heads):
    """One post-LN BERT layer with DeepNorm residuals, written out from the formula:
    a = LN(alpha x + Attn(x) W_o + b_o), out = LN(alpha a + GELU(a W_1 + b_1) W_2 + b_2)."""
    att, p = layer.attention, {n: t.detach() for n, t in layer.named_parameters()}

    def lin(h, name):
        return h @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    def ln(h, name):
        mu = h.mean(-1, keepdim=True)
        var = ((h - mu) ** 2).mean(-1, keepdim=True)
        return (h - mu) / torch.sqrt(var + att.output.LayerNorm.eps) * p[f"{name}.weight"] + p[f"{name}.bias"]

    b, t, d = x.shape

    def split(h):
        return h.view(b, t, heads, d // heads).transpose(1, 2)

    q, k, v = (split(lin(x, f"attention.self.{n}")) for n in ("query", "key", "value"))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
    context = (weights @ v).transpose(1, 2).reshape(b, t, d)
    a = ln(alpha * x + lin(context, "attention.output.dense"), "attention.output.LayerNorm")
    h = lin(a, "intermediate.dense")
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU
    return ln(alpha * a + lin(h, "output.dense"), "output.LayerNorm")


@pytest.mark.parametrize("layers", [1, 3, 12])
def test_deepnorm_layer_is_the_formula(layers):
    sizes = dict(SIZES, num_hidden_layers=layers, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = RaftForMaskedLM(make_config("bert", deepnorm=True, **sizes)).double().eval()
    alpha = (2 * layers) ** 0.25
    x = torch.randn(2, 7, SIZES["hidden_size"], dtype=torch.float64)
    for layer in model.bert.encoder.layer:
        torch.testing.assert_close(_run_layer(layer, x), _layer_by_hand(layer, x, alpha, SIZES["num_attention_heads"]),
                                   rtol=1e-12, atol=1e-12)
    stock = RaftForMaskedLM(make_config("bert", **sizes)).double().eval()  # the same test, alpha = 1
    layer = stock.bert.encoder.layer[0]
    torch.testing.assert_close(_run_layer(layer, x), _layer_by_hand(layer, x, 1.0, 2), rtol=1e-12, atol=1e-12)


def _run_layer(layer, x):
    with torch.no_grad():
        out = layer(x)
    return out[0] if isinstance(out, tuple) else out


def test_deepnorm_keeps_the_state_dict_and_draws_no_random_numbers():
    plain, deep = (_model(RaftForMaskedLM, "raft", seed=3, deepnorm=d) for d in (False, True))
    a, b = plain.state_dict(), deep.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    again = type(deep.config).from_dict(deep.config.to_dict())
    assert (again.deepnorm, again.embedding_layernorm, again.weight_init) == (True, True, "bert")


def test_without_embedding_layernorm_the_encoder_gets_the_summed_embeddings():
    model = _model(RaftForMaskedLM, "raft", embedding_layernorm=False).double().eval()  # eval: no dropout
    emb = model.bert.embeddings
    ids = torch.randint(0, SIZES["vocab_size"], (2, 9))
    types = torch.randint(0, 2, (2, 9))
    expected = (emb.word_embeddings.weight[ids] + emb.position_embeddings.weight[torch.arange(9)]
                + emb.token_type_embeddings.weight[types])
    with torch.no_grad():
        torch.testing.assert_close(emb(input_ids=ids, token_type_ids=types), expected, rtol=1e-15, atol=1e-15)
    assert not any("embeddings.LayerNorm" in k for k in model.state_dict())
    stock = _model(RaftForMaskedLM, "raft").eval()
    assert "bert.embeddings.LayerNorm.weight" in stock.state_dict()


def _std_close(tensor, expected, rel=0.03):
    assert tensor.detach().double().std().item() == pytest.approx(expected, rel=rel)


WIDE = dict(vocab_size=50, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
            max_position_embeddings=16)


def test_deepnet_init_gains():
    """Xavier-normal: std = gain * sqrt(2 / (fan_in + fan_out)); gain (8 N)^(-1/4) for value,
    attention output and both FFN matrices, 1 for query and key; biases zero."""
    torch.manual_seed(0)
    model = RaftForMaskedLM(make_config("raft", weight_init="deepnet", **WIDE))
    d, f, n = WIDE["hidden_size"], WIDE["intermediate_size"], WIDE["num_hidden_layers"]
    beta = (8 * n) ** -0.25
    for layer in model.bert.encoder.layer:
        att = layer.attention
        for linear, gain, fans in ((att.self.query, 1.0, d + d), (att.self.key, 1.0, d + d),
                                   (att.self.value, beta, d + d), (att.output.dense, beta, d + d),
                                   (layer.intermediate.dense, beta, d + f), (layer.output.dense, beta, f + d)):
            _std_close(linear.weight, gain * math.sqrt(2 / fans))
            assert linear.weight.mean().abs() < 3 * gain * math.sqrt(2 / fans) / math.sqrt(linear.weight.numel())
            assert not linear.bias.any()
    _std_close(model.cls.predictions.transform.dense.weight, 0.02)  # the rest: BERT's


def test_authors_init_ffn_input_and_linear_defaults():
    """weight_init authors: RAF layers' FFN input Xavier-normal with gain (8 N)^(-1/4); the GELU
    layers' FFN input, pooler and MLM transform torch's Linear default (U(+-1/sqrt fan_in): std
    1/sqrt(3 fan_in), biases likewise); everything else BERT's N(0, 0.02) with zero biases."""
    d, f, n = WIDE["hidden_size"], WIDE["intermediate_size"], WIDE["num_hidden_layers"]
    beta = (8 * n) ** -0.25
    torch.manual_seed(0)
    raft = RaftForSequenceClassification(make_config("raft", weight_init="authors", rational_layers="0,2,pooler",
                                                     num_labels=2, **WIDE))
    for i, layer in enumerate(raft.bert.encoder.layer):
        ffn_in = layer.intermediate.dense
        _std_close(ffn_in.weight, beta * math.sqrt(2 / (d + f)) if i in (0, 2) else 1 / math.sqrt(3 * d))
        assert ffn_in.bias.abs().max() <= 1 / math.sqrt(d) and ffn_in.bias.abs().max() > 0.5 / math.sqrt(d)
        for linear in (layer.attention.self.query, layer.attention.self.value, layer.output.dense):
            _std_close(linear.weight, 0.02)
            assert not linear.bias.any()
    _std_close(raft.bert.pooler.dense.weight, 1 / math.sqrt(3 * d))
    torch.manual_seed(0)
    mlm = RaftForMaskedLM(make_config("bert", weight_init="authors", **WIDE))
    _std_close(mlm.bert.encoder.layer[0].intermediate.dense.weight, 1 / math.sqrt(3 * d))
    _std_close(mlm.cls.predictions.transform.dense.weight, 1 / math.sqrt(3 * d))
    # at BERT-base (768 -> 3072, N = 12) the RAF layers' FFN input starts ~2.9x smaller
    ratio = (1 / math.sqrt(3 * 768)) / ((8 * 12) ** -0.25 * math.sqrt(2 / (768 + 3072)))
    assert ratio == pytest.approx(2.86, abs=0.01)


def test_authors_init_leaves_loaded_weights_alone_and_inits_a_new_pooler(tmp_path):
    mlm = _model(RaftForMaskedLM, "raft", weight_init="authors", deepnorm=True, embedding_layernorm=False)
    mlm.save_pretrained(tmp_path)
    clf = load_pretrained(tmp_path, "sequence-classification", num_labels=2)
    loaded, saved = clf.bert.state_dict(), mlm.bert.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())
    bound = 1 / math.sqrt(SIZES["hidden_size"])  # the new pooler: torch's Linear default
    assert 0.5 * bound < clf.bert.pooler.dense.bias.abs().max() <= bound


@pytest.mark.parametrize("cls,head", [(RaftForMaskedLM, "masked-lm"), (RaftForQuestionAnswering, "question-answering")])
def test_authors_variant_save_load_round_trip_is_exact(tmp_path, cls, head):
    model = _model(cls, "raft", deepnorm=True, embedding_layernorm=False, weight_init="authors").eval()
    _perturb_rafs(model)
    ids = torch.randint(0, SIZES["vocab_size"], (2, 10))
    out = model(ids)
    expected = out.logits if hasattr(out, "logits") else out.start_logits
    model.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path, head).eval()
    assert (loaded.config.deepnorm, loaded.config.embedding_layernorm, loaded.config.weight_init) == (
        True, False, "authors")
    assert type(loaded.bert.encoder.layer[0].output).__name__ == "DeepNormOutput"
    out = loaded(ids)
    assert torch.equal(out.logits if hasattr(out, "logits") else out.start_logits, expected)


@pytest.mark.parametrize("cls", [RaftForMaskedLM, RaftForSequenceClassification, RaftForQuestionAnswering])
@pytest.mark.parametrize("variant", ["bert", "raft"])
def test_defaults_are_stock_bert_bit_for_bit(cls, variant):
    """Default options: the stock transformers model, same modules, same weights, same outputs
    (raft: stock BERT with its RAFs, which draw no random numbers)."""
    from transformers import BertConfig, BertForMaskedLM, BertForQuestionAnswering, BertForSequenceClassification

    stock_cls = {RaftForMaskedLM: BertForMaskedLM, RaftForSequenceClassification: BertForSequenceClassification,
                 RaftForQuestionAnswering: BertForQuestionAnswering}[cls]
    labels = {"num_labels": 2} if cls is RaftForQuestionAnswering else {"num_labels": 3}
    ours = _model(cls, variant, **labels)
    torch.manual_seed(0)
    stock = stock_cls(BertConfig(**SIZES, **labels))
    a, b = ours.state_dict(), stock.state_dict()
    assert set(b) <= set(a) and all(torch.equal(a[k], b[k]) for k in b)
    assert set(a) - set(b) == {k for k in a if "act" in k}  # the RAFs, raft only
    assert (ours.config.deepnorm, ours.config.embedding_layernorm, ours.config.weight_init) == (False, True, "bert")
    ours_types = [type(m) for n, m in ours.named_modules() if "act" not in n]
    stock_types = [type(m) for n, m in stock.named_modules() if "act" not in n]
    assert ours_types[1:] == stock_types[1:]  # the same stock modules below the head class
    if variant == "bert":
        ids = torch.randint(0, SIZES["vocab_size"], (2, 10))
        torch.manual_seed(1)
        x = ours.train()(ids)
        torch.manual_seed(1)
        y = stock.train()(ids)
        for name in ("logits", "start_logits", "end_logits"):
            if hasattr(x, name) and getattr(x, name) is not None:
                assert torch.equal(getattr(x, name), getattr(y, name))


def test_unknown_weight_init_is_named():
    with pytest.raises(ValueError, match="'xavier'"):
        make_config("bert", weight_init="xavier", **SIZES)
