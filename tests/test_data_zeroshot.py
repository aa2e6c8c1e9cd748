"""Zero-shot data: the SNLI readers and label table (`raft.data.snli`) and the TriviaQA verified
web dev conversion to SQuAD format and its three scores (`raft.data.triviaqa`), on small files
written here in the official formats (SNLI 1.0 jsonl / txt; TriviaQA ``qa/verified-web-dev.json``
+ evidence files). Expected outputs are written out by hand; the Hub paths run on a
monkeypatched ``datasets.load_dataset``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from raft.data import snli, triviaqa

# ------------------------------------------------------------------------------ SNLI fixtures
# (gold_label, sentence1, sentence2, pairID); row 2 has no gold label ("-")
SNLI_ROWS = [
    ("neutral", "A man plays a guitar on a stage.", "The man is a famous musician.", "1#0n"),
    ("contradiction", "A man plays a guitar on a stage.", "The man is sleeping at home.", "1#0c"),
    ("-", "Two dogs run through a field.", "The dogs are playing.", "2#0n"),
    ("entailment", "Two dogs run through a field.", "Animals are outdoors.", "2#0e"),
    ("neutral", "A child eats an apple.", "The child is hungry.", "3#0n"),
]
TXT_HEADER = ["gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
              "sentence2_parse", "sentence1", "sentence2", "captionID", "pairID", "label1", "label2", "label3",
              "label4", "label5"]
# hand-checked: the four pairs with a gold label; SNLI ids 0 entailment, 1 neutral, 2 contradiction
EXPECTED_SNLI = {
    "text_a": ["A man plays a guitar on a stage.", "A man plays a guitar on a stage.",
               "Two dogs run through a field.", "A child eats an apple."],
    "text_b": ["The man is a famous musician.", "The man is sleeping at home.", "Animals are outdoors.",
               "The child is hungry."],
    "label": [1, 2, 0, 1],
    "idx": [0, 1, 3, 4],
}


def write_snli_jsonl(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for gold, s1, s2, pair in SNLI_ROWS:
            labels = ["neutral", "entailment"] if gold == "-" else [gold] * 5
            f.write(json.dumps({"annotator_labels": labels, "captionID": pair.split("#")[0] + ".jpg#0",
                                "gold_label": gold, "pairID": pair, "sentence1": s1,
                                "sentence1_binary_parse": "( x )", "sentence1_parse": "(ROOT (S x))",
                                "sentence2": s2, "sentence2_binary_parse": "( y )",
                                "sentence2_parse": "(ROOT (S y))"}) + "\n")
    return path


def write_snli_txt(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(TXT_HEADER)]
    for gold, s1, s2, pair in SNLI_ROWS:
        lines.append("\t".join([gold, "( x )", "( y )", "(ROOT (S x))", "(ROOT (S y))", s1, s2,
                                pair.split("#")[0] + ".jpg#0", pair, gold, gold, "", "", ""]))
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


@pytest.fixture
def no_env_root(monkeypatch):
    monkeypatch.delenv("RAFT_DATA_DIR", raising=False)


# ------------------------------------------------------------------------------ SNLI readers
def test_snli_jsonl_and_txt_give_the_same_examples_without_unlabelled_pairs(tmp_path):
    cols, rows = snli.read_snli(write_snli_jsonl(tmp_path / "snli_1.0_test.jsonl"))
    assert (cols, rows) == (EXPECTED_SNLI, 5)
    cols, rows = snli.read_snli(write_snli_txt(tmp_path / "snli_1.0_test.txt"))
    assert (cols, rows) == (EXPECTED_SNLI, 5)


def test_load_snli_local(tmp_path):
    write_snli_jsonl(tmp_path / "snli" / "snli_1.0_test.jsonl")
    data = snli.load_snli(tmp_path)
    assert data.source == "local" and data.substitute is False
    assert data.sizes == {"rows": 5, "no_gold_label": 1}
    assert data.test.to_dict() == EXPECTED_SNLI
    assert data.data_notes == ["SNLI test: 1 of 5 pairs have no gold label and are left out (4 scored)."]


def test_snli_layout_checks(tmp_path, no_env_root):
    assert snli.missing_files(None) == ["<data-dir>/snli/snli_1.0_test.jsonl"] and snli.uses_hub(None)
    assert snli.missing_files(tmp_path) == [str(tmp_path / "snli" / "snli_1.0_test.jsonl")]
    assert snli.uses_hub(tmp_path)
    (tmp_path / "snli").mkdir()  # the folder without a file: an error, not the Hub
    assert not snli.uses_hub(tmp_path) and snli.missing_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="snli_1.0_test.jsonl"):
        snli.load_snli(tmp_path)
    write_snli_txt(tmp_path / "snli" / "snli_1.0_test.txt")
    assert snli.missing_files(tmp_path) == [] and snli.local_file(tmp_path).name == "snli_1.0_test.txt"
    write_snli_jsonl(tmp_path / "snli" / "snli_1.0_test.jsonl")
    assert snli.local_file(tmp_path).name == "snli_1.0_test.jsonl"  # the jsonl is preferred


def test_snli_bad_rows_name_file_and_line(tmp_path):
    path = write_snli_jsonl(tmp_path / "snli_1.0_test.jsonl")
    path.write_text(path.read_text().replace('"gold_label": "entailment"', '"gold_label": "maybe"'))
    with pytest.raises(snli.SnliFormatError, match=r"snli_1.0_test.jsonl:4: bad gold_label 'maybe'"):
        snli.read_snli(path)
    write_snli_jsonl(path)
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(snli.SnliFormatError, match=r":6: not an SNLI 1.0 jsonl line"):
        snli.read_snli_jsonl(path)
    txt = tmp_path / "snli_1.0_test.txt"
    txt.write_text("gold_label\tsentence1\nneutral\ta\n")
    with pytest.raises(snli.SnliFormatError, match=r":1: header lacks column\(s\) \['sentence2'\]"):
        snli.read_snli(txt)


def test_snli_from_the_hub(monkeypatch, no_env_root):
    import datasets

    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])})
    hub = datasets.Dataset.from_dict({"premise": [r[1] for r in SNLI_ROWS], "hypothesis": [r[2] for r in SNLI_ROWS],
                                      "label": [-1 if r[0] == "-" else snli.SNLI_LABELS.index(r[0])
                                                for r in SNLI_ROWS]},
                                     features=features)
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or hub)
    data = snli.load_snli(None)
    assert calls == [(("stanfordnlp/snli",), {"split": "test"})]
    assert data.source == "hub" and data.sizes == {"rows": 5, "no_gold_label": 1}
    assert data.test.to_dict() == EXPECTED_SNLI


def test_snli_to_mnli_label_table():
    assert snli.SNLI_LABELS == ("entailment", "neutral", "contradiction")
    assert snli.SNLI_TO_MNLI == {"entailment": "entailment", "neutral": "neutral", "contradiction": "contradiction"}
    # GLUE MNLI's order (raft finetune-glue's label2id): the identity
    assert snli.model_label_ids({"entailment": 0, "neutral": 1, "contradiction": 2}) == {0: 0, 1: 1, 2: 2}
    # another order: by name, not by position
    assert snli.model_label_ids({"contradiction": 0, "Entailment": 1, "neutral": 2}) == {0: 1, 1: 2, 2: 0}
    with pytest.raises(ValueError, match=r"not name the MNLI class\(es\) \['entailment', 'neutral', 'contradiction'\]"):
        snli.model_label_ids({"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2})
    with pytest.raises(ValueError, match="not 3 distinct ids below 3"):
        snli.model_label_ids({"entailment": 0, "neutral": 0, "contradiction": 2}, 3)


# ------------------------------------------------------------------------------ TriviaQA fixtures
ANSWER = {"Aliases": ["Sunset Blvd", "Sunset Boulevard", "Sunset Blvd."], "NormalizedAliases":
          ["sunset boulevard", "sunset blvd"], "NormalizedValue": "sunset boulevard", "Value": "Sunset Boulevard",
          "Type": "WikipediaEntity", "MatchedWikiEntityName": "Sunset Boulevard"}
WIKI_TEXT = "Andrew Lloyd Webber\n\nHis musical Sunset Boulevard opened on Broadway in 1994.\n"
WEB_TEXT = "  The show  (Sunset Blvd.) premiered\tin the US in December 1993.  \n\n"
PARIS_TEXT = "Paris is the capital of France."
Q1 = "Which Lloyd Webber musical premiered in the US in December 1993?"
Q3 = "Which city is the second largest in France?"


def triviaqa_file() -> dict:
    """A verified web dev file: tc_1 (verified) with a wiki page, a verified and an unverified
    search result; tc_2 not verified; tc_3 (verified) with one search result without the answer."""
    def page(name, verified, **kw):
        return {"Filename": name, "DocPartOfVerifiedEval": verified, "Title": name, **kw}

    return {"Domain": "Web", "VerifiedEval": True, "Version": 1.0, "Split": "dev", "Data": [
        {"Answer": ANSWER, "Question": Q1, "QuestionId": "tc_1", "QuestionPartOfVerifiedEval": True,
         "QuestionSource": "http://www.example.org/",
         "EntityPages": [page("Andrew_Lloyd_Webber.txt", True, DocSource="TagMe")],
         "SearchResults": [page("35/35_995.txt", True, Rank=0, Url="http://a.example/", Description="d"),
                           page("35/35_996.txt", False, Rank=1, Url="http://b.example/", Description="d")]},
        {"Answer": ANSWER, "Question": "Unverified?", "QuestionId": "tc_2", "QuestionPartOfVerifiedEval": False,
         "QuestionSource": "x", "EntityPages": [], "SearchResults": [page("9/9_1.txt", False, Rank=0)]},
        {"Answer": {"Aliases": ["Lyon"], "NormalizedAliases": ["lyon"], "NormalizedValue": "lyon"},
         "Question": Q3, "QuestionId": "tc_3", "QuestionPartOfVerifiedEval": True, "QuestionSource": "x",
         "EntityPages": [], "SearchResults": [page("7/7_1.txt", True, Rank=0)]},
    ]}


FIXTURE_TEXTS = {"evidence/wikipedia/Andrew_Lloyd_Webber.txt": WIKI_TEXT, "evidence/web/35/35_995.txt": WEB_TEXT,
                 "evidence/web/7/7_1.txt": PARIS_TEXT}


def write_triviaqa(root, data: dict | None = None, texts: dict | None = None):
    """A local copy under ``root/triviaqa``: the question file (default `triviaqa_file`) and its
    evidence files ({path under triviaqa/: text}, default ``FIXTURE_TEXTS``)."""
    d = root / "triviaqa"
    (d / "qa").mkdir(parents=True, exist_ok=True)
    (d / "qa" / "verified-web-dev.json").write_text(json.dumps(data or triviaqa_file(), indent=4))
    for rel, text in (texts or FIXTURE_TEXTS).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return root


# hand-checked conversion: contexts = whitespace tokens joined by one space with a "\n" token after
# each paragraph, stripped; answers: the first normalized alias found in the lower-cased context
# ("sunset boulevard" at 36 in the wiki page; only "sunset blvd" -- the second alias -- at 10 in
# the web page; no alias of tc_3's answer in its page). File order (wiki, web, tc_3) shuffled with
# random.seed(10) gives [web, wiki, tc_3].
WIKI_CONTEXT = "Andrew Lloyd Webber \n \n His musical Sunset Boulevard opened on Broadway in 1994."
WEB_CONTEXT = "The show (Sunset Blvd.) premiered in the US in December 1993."
EXPECTED_SQUAD = {"version": 1.0, "data": [
    {"paragraphs": [{"context": WEB_CONTEXT, "qas": [{"question": Q1,
                                                      "answers": [{"text": "sunset blvd", "answer_start": 10}],
                                                      "id": "tc_1--35/35_995.txt", "qid": "tc_1"}]}]},
    {"paragraphs": [{"context": WIKI_CONTEXT, "qas": [{"question": Q1, "answers": [{"text": "sunset boulevard",
                                                                                     "answer_start": 36}],
                                                       "id": "tc_1--Andrew_Lloyd_Webber.txt", "qid": "tc_1"}]}]},
    {"paragraphs": [{"context": "Paris is the capital of France.",
                     "qas": [{"question": Q3, "answers": [], "id": "tc_3--7/7_1.txt", "qid": "tc_3"}]}]},
]}


# ------------------------------------------------------------------------------ TriviaQA conversion
def test_truncation_follows_the_script():
    text = "a b c\nd e\nf g h"
    assert triviaqa.select_relevant_portion(text, 2) == "a b"
    # the "\n" after a whole paragraph counts but does not stop: a b c \n, then d reaches 5 >= 4
    assert triviaqa.select_relevant_portion(text, 4) == "a b c \n d"
    assert triviaqa.select_relevant_portion(text, 100) == "a b c \n d e \n f g h"
    long_text = "\n".join(" ".join(f"w{p}_{k}" for k in range(100)) for p in range(12))
    assert len(triviaqa.select_relevant_portion(long_text).split(" ")) == 800  # 7 paragraphs (707 tokens) + 93 words


def test_answers_are_found_by_normalized_alias():
    assert triviaqa.answer_index_in_document(ANSWER, WIKI_CONTEXT) == ("sunset boulevard", 36)
    assert triviaqa.answer_index_in_document(ANSWER, WEB_CONTEXT) == ("sunset blvd", 10)
    assert triviaqa.answer_index_in_document(ANSWER, "nothing here") == ("sunset boulevard", -1)
    assert WIKI_CONTEXT[36:36 + 16] == "Sunset Boulevard" and WEB_CONTEXT[10:21] == "Sunset Blvd"


def test_verified_filter_and_triples():
    data = triviaqa.verified_data(triviaqa_file())
    assert [d["QuestionId"] for d in data] == ["tc_1", "tc_3"]
    triples = triviaqa.qad_triples(data)
    assert [(t["QuestionId"], t["Source"], t["Filename"]) for t in triples] == [
        ("tc_1", "EntityPages", "Andrew_Lloyd_Webber.txt"), ("tc_1", "SearchResults", "35/35_995.txt"),
        ("tc_3", "SearchResults", "7/7_1.txt")]


def test_conversion_equals_the_hand_checked_expectation(tmp_path):
    root = write_triviaqa(tmp_path)
    d = root / "triviaqa"
    raw = triviaqa.read_triviaqa_json(d / "qa" / "verified-web-dev.json")
    triples = triviaqa.qad_triples(triviaqa.verified_data(raw))
    documents = ((t, triviaqa.evidence_path(d, t).read_text()) for t in triples)
    truths = {}
    squad = triviaqa.convert_to_squad(documents, raw["Version"], truths=truths)
    assert squad == EXPECTED_SQUAD
    sunset = ["sunset boulevard", "sunset blvd"]
    assert truths == {"tc_1--Andrew_Lloyd_Webber.txt": sunset, "tc_1--35/35_995.txt": sunset,
                      "tc_3--7/7_1.txt": ["lyon"]}
    cols, no_answer = triviaqa.squad_examples(squad, truths)
    assert no_answer == 1
    assert cols == {"id": ["tc_1--35/35_995.txt", "tc_1--Andrew_Lloyd_Webber.txt", "tc_3--7/7_1.txt"],
                    "question": [Q1, Q1, Q3], "context": [WEB_CONTEXT, WIKI_CONTEXT, PARIS_TEXT],
                    "answers": [{"text": ["sunset blvd"], "answer_start": [10]},
                                {"text": ["sunset boulevard"], "answer_start": [36]},
                                {"text": [], "answer_start": []}],  # no alias in its context: kept, flagged
                    "ground_truths": [sunset, sunset, ["lyon"]]}


def test_load_triviaqa_local(tmp_path):
    data = triviaqa.load_triviaqa(write_triviaqa(tmp_path))
    assert data.source == "local" and data.substitute is False
    assert data.sizes == {"questions": 2, "documents": 3, "no_answer": 1}
    assert data.squad == EXPECTED_SQUAD
    assert data.test["id"] == ["tc_1--35/35_995.txt", "tc_1--Andrew_Lloyd_Webber.txt", "tc_3--7/7_1.txt"]
    assert data.test["answers"][2] == {"text": [], "answer_start": []} and data.test["ground_truths"][2] == ["lyon"]
    assert any("800 whitespace tokens" in n for n in data.data_notes)
    assert any("1 of 3 question-document pairs have no answer alias in their context: they count in TriviaQA's"
               in n and "(2 pairs)" in n for n in data.data_notes)


def test_triviaqa_layout_checks(tmp_path, no_env_root):
    assert triviaqa.missing_files(None) == ["<data-dir>/triviaqa/qa/verified-web-dev.json"]
    assert triviaqa.uses_hub(None) and triviaqa.uses_hub(tmp_path)
    assert triviaqa.missing_files(tmp_path) == [str(tmp_path / "triviaqa/qa/verified-web-dev.json")]
    write_triviaqa(tmp_path)
    assert triviaqa.missing_files(tmp_path) == [] and not triviaqa.uses_hub(tmp_path)
    web = tmp_path / "triviaqa/evidence/web/35/35_995.txt"
    web.unlink()  # the unverified 35/35_996.txt and 9/9_1.txt are never needed
    assert triviaqa.missing_files(tmp_path) == [str(web)]
    with pytest.raises(FileNotFoundError, match=r"1 missing evidence file\(s\): .*35_995.txt; expected"):
        triviaqa.load_triviaqa(tmp_path)


def test_triviaqa_format_errors_name_the_file(tmp_path):
    qa = tmp_path / "verified-web-dev.json"
    qa.write_text(json.dumps({**triviaqa_file(), "VerifiedEval": False}))
    with pytest.raises(triviaqa.TriviaqaFormatError, match="verified-web-dev.json: VerifiedEval=False"):
        triviaqa.read_triviaqa_json(qa)
    bad = triviaqa_file()
    del bad["Data"][0]["SearchResults"][0]["DocPartOfVerifiedEval"]
    with pytest.raises(triviaqa.TriviaqaFormatError, match=r"'tc_1'.*DocPartOfVerifiedEval"):
        triviaqa.verified_data(bad, qa)
    bad = triviaqa_file()
    bad["Data"][2]["SearchResults"][0]["DocPartOfVerifiedEval"] = False
    with pytest.raises(triviaqa.TriviaqaFormatError, match="'tc_3'.*without verified documents"):
        triviaqa.verified_data(bad, qa)


# ------------------------------------------------------------------------------ TriviaQA scoring
# A second verified web dev file for the three scores: s_1 (aliases "sunset boulevard", "sunset blvd")
# with a wiki page holding no alias ("Sunset-Blvd" is not the substring "sunset blvd") and a web page
# whose first alias found is "sunset boulevard"; s_2 (alias "lyon", human answer "Lyon (France)")
# with a page holding "lyon" and one holding no alias.
SCORING_TEXTS = {"evidence/wikipedia/Sunset_Boulevard_(musical).txt": "The Sunset-Blvd musical opened in London.",
                 "evidence/web/1/1_1.txt": "Sunset Boulevard, also billed as Sunset Blvd, opened in 1993.",
                 "evidence/web/2/2_1.txt": "Many chefs trained in Lyon, France.",
                 "evidence/web/2/2_2.txt": "Paris is the capital of France."}
NO_ALIAS_SUNSET, SUNSET = "s_1--Sunset_Boulevard_(musical).txt", "s_1--1/1_1.txt"
LYON, NO_ALIAS_LYON = "s_2--2/2_1.txt", "s_2--2/2_2.txt"
# predictions (spans of each context) and the hand-computed scores per pair:
SCORING_PREDICTIONS = {
    NO_ALIAS_SUNSET: "Sunset-Blvd",  # TriviaQA: "sunset blvd" = the 2nd alias: EM 1, F1 1; all pairs (gold ""): 0, 0
    SUNSET: "Sunset Blvd",  # TriviaQA: only the 2nd alias: 1, 1; SQuAD vs "sunset boulevard": EM 0, F1 1/2
    LYON: "Lyon, France",  # TriviaQA: the human answer "lyon france": 1, 1; SQuAD vs "lyon": EM 0, F1 2/3
    NO_ALIAS_LYON: "Paris",  # 0 everywhere
}
EXPECTED_SCORES = {
    "triviaqa": {"exact_match": 100 * 3 / 4, "f1": 100 * 3 / 4},  # every pair, max over the ground truths
    "all_pairs": {"exact_match": 0.0, "f1": 100 * (1 / 2 + 2 / 3) / 4},  # every pair, gold "" without an alias
    "has_ans": {"exact_match": 0.0, "f1": 100 * (1 / 2 + 2 / 3) / 2},  # the two pairs with an alias
}


def scoring_file() -> dict:
    def page(name):
        return {"Filename": name, "DocPartOfVerifiedEval": True}

    lyon = {"Aliases": ["Lyon"], "NormalizedAliases": ["lyon"], "NormalizedValue": "lyon",
            "HumanAnswers": ["Lyon (France)"]}
    return {"Domain": "Web", "VerifiedEval": True, "Version": 1.0, "Split": "dev", "Data": [
        {"Answer": ANSWER, "Question": "Which musical opened on Broadway in 1994?", "QuestionId": "s_1",
         "QuestionPartOfVerifiedEval": True, "EntityPages": [page("Sunset_Boulevard_(musical).txt")],
         "SearchResults": [page("1/1_1.txt")]},
        {"Answer": lyon, "Question": "Which French city is famous for its cooking?", "QuestionId": "s_2",
         "QuestionPartOfVerifiedEval": True, "EntityPages": [], "SearchResults": [page("2/2_1.txt"), page("2/2_2.txt")]},
    ]}


def test_triviaqa_normalisation_is_the_scripts_not_squads():
    from raft.data.metrics import normalize_answer, triviaqa_normalize_answer

    # punctuation becomes a space (SQuAD deletes it); underscores and the quote marks ‘ ’ ´ ` too
    assert triviaqa_normalize_answer("Sunset-Blvd.") == "sunset blvd"
    assert normalize_answer("Sunset-Blvd.") == "sunsetblvd"
    assert triviaqa_normalize_answer("  The_Phantom \u2019of\u00b4the` Opera ") == "phantom of opera"
    # articles are removed after the split: the "a" of "U.S.A" goes (SQuAD keeps "usa")
    assert triviaqa_normalize_answer("U.S.A") == "u s" and normalize_answer("U.S.A") == "usa"


def test_triviaqa_scores_equal_the_hand_computed_ones(tmp_path):
    data = triviaqa.load_triviaqa(write_triviaqa(tmp_path, scoring_file(), SCORING_TEXTS))
    assert data.sizes == {"questions": 2, "documents": 4, "no_answer": 2}
    answers = dict(zip(data.test["id"], data.test["answers"]))
    assert answers[SUNSET]["text"] == ["sunset boulevard"] and answers[LYON]["text"] == ["lyon"]
    assert answers[NO_ALIAS_SUNSET]["text"] == [] == answers[NO_ALIAS_LYON]["text"]
    truths = dict(zip(data.test["id"], data.test["ground_truths"]))
    assert truths[LYON] == ["lyon", "lyon france"]  # NormalizedAliases + the normalised HumanAnswers
    blocks, sizes = triviaqa.score(SCORING_PREDICTIONS, data.test)
    assert list(blocks) == list(triviaqa.EVAL_SETS) == ["triviaqa", "all_pairs", "has_ans"]
    for name, expected in EXPECTED_SCORES.items():
        assert blocks[name] == pytest.approx({**expected, "score": expected["f1"]}), name
    assert sizes == {"triviaqa": 4, "all_pairs": 4, "has_ans": 2}
    # a pair without a prediction counts 0 in TriviaQA's average (the script's "Missed question")
    blocks, _ = triviaqa.score({k: v for k, v in SCORING_PREDICTIONS.items() if k != SUNSET}, data.test)
    assert blocks["triviaqa"]["exact_match"] == pytest.approx(50.0)


def test_all_pairs_scoring_is_the_authors_squad_evaluate():
    from raft.data.metrics import AUTHORS_NO_SPAN, squad_all_pairs_metrics

    refs = {"a": ["sunset boulevard"], "b": []}
    # gold "" for "b": a non-empty prediction scores 0 ...
    assert squad_all_pairs_metrics({"a": "Sunset Boulevard", "b": "Paris"}, refs)["exact_match"] == 50.0
    # ... one that normalises to nothing scores 1 (transformers' compute_f1 / compute_exact) ...
    assert squad_all_pairs_metrics({"a": "Sunset Boulevard", "b": "the"}, refs) == {
        "exact_match": 100.0, "f1": 100.0, "score": 100.0}
    # ... but "" (no valid span) is what the authors' post-processing writes as "empty": 0
    assert AUTHORS_NO_SPAN == "empty"
    assert squad_all_pairs_metrics({"a": "Sunset Boulevard", "b": ""}, refs)["f1"] == 50.0


def test_score_without_pairs_holding_an_alias(tmp_path):
    data = triviaqa.load_triviaqa(write_triviaqa(tmp_path, scoring_file(), SCORING_TEXTS))
    part = data.test.filter(lambda ex: not ex["answers"]["text"])  # a capped set can hold none
    blocks, sizes = triviaqa.score({i: "Sunset-Blvd" for i in part["id"]}, part)
    assert set(blocks) == {"triviaqa", "all_pairs"} and sizes["has_ans"] == 0
    assert blocks["triviaqa"]["exact_match"] == 50.0 and blocks["all_pairs"]["exact_match"] == 0.0


def hub_rows() -> list[dict]:
    """The fixture's questions as rows of the Hub's rc.web (all documents, no verification flags)."""
    texts = {"Andrew_Lloyd_Webber.txt": WIKI_TEXT, "35/35_995.txt": WEB_TEXT, "35/35_996.txt": "Sunset Boulevard.",
             "9/9_1.txt": "x", "7/7_1.txt": PARIS_TEXT}
    rows = []
    for datum in triviaqa_file()["Data"]:
        ep, sr = datum["EntityPages"], datum["SearchResults"]
        rows.append({"question": datum["Question"], "question_id": datum["QuestionId"],
                     "answer": {"normalized_aliases": datum["Answer"]["NormalizedAliases"],
                                "normalized_value": datum["Answer"]["NormalizedValue"]},
                     "entity_pages": {"filename": [p["Filename"] for p in ep],
                                      "wiki_context": [texts[p["Filename"]] for p in ep]},
                     "search_results": {"filename": [p["Filename"] for p in sr],
                                        "search_context": [texts[p["Filename"]] for p in sr]}})
    return rows


def test_triviaqa_hub_substitute(monkeypatch, no_env_root):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or hub_rows())
    data = triviaqa.load_triviaqa(None)
    assert calls == [(("mandarjoshi/trivia_qa", "rc.web"), {"split": "validation"})]
    assert data.source == "hub" and data.substitute is True
    # every document of every question: 3 + 1 + 1 pairs; tc_2's "x" and tc_3's page have no alias
    assert data.sizes == {"questions": 3, "documents": 5, "no_answer": 2}
    assert sorted(data.test["id"]) == ["tc_1--35/35_995.txt", "tc_1--35/35_996.txt", "tc_1--Andrew_Lloyd_Webber.txt",
                                       "tc_2--9/9_1.txt", "tc_3--7/7_1.txt"]  # every pair, with or without an alias
    assert "SUBSTITUTE" in data.data_notes[0] and "rc.web" in data.data_notes[0]


def test_layout_checks_import_neither_torch_nor_datasets(tmp_path):
    code = ("import sys; from raft.data import snli, triviaqa; "
            f"snli.missing_files({str(tmp_path)!r}); triviaqa.missing_files({str(tmp_path)!r}); "
            "snli.uses_hub(None); triviaqa.uses_hub(None); "
            "bad = [m for m in ('torch', 'datasets', 'transformers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
