"""Reward: SQuAD normalisation and scores against hand-computed values; answer extraction."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zerosearch.reward import (
    cover_exact_match,
    exact_match,
    extract_answer,
    f1_score,
    normalize_answer,
    score_response,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  a   Cat,  an apple  ", "cat apple"),
        ("Theater", "theater"),  # 'the' inside a word is not an article
        ("U.S.A.", "usa"),
        ("Rock 'n' Roll", "rock n roll"),
        ("", ""),
        ("THE", ""),
        ("tab\tand\nnewline", "tab and newline"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_exact_match():
    assert exact_match("the Beatles", ["Beatles"]) == 1.0
    assert exact_match("Beatles band", ["Beatles"]) == 0.0
    assert exact_match("paris", "Paris.") == 1.0  # golds may be a str
    assert exact_match("x", ["a b", "X!"]) == 1.0
    assert exact_match(None, ["x"]) == 0.0
    assert exact_match("x", []) == 0.0


def test_cover_exact_match():
    assert cover_exact_match("it is the city of Paris, France", ["Paris"]) == 1.0
    assert cover_exact_match("London", ["Paris", "City of London"]) == 0.0
    assert cover_exact_match("the city of london", ["Paris", "City of London"]) == 1.0
    assert cover_exact_match("anything", ["the"]) == 0.0  # a gold normalising to "" never covers
    assert cover_exact_match(None, ["x"]) == 0.0


def test_f1_hand_computed():
    # pred tokens: [barack, obama, jr] ; gold: [barack, obama] -> P=2/3 R=1 F1=0.8
    assert f1_score("Barack Obama Jr.", ["Barack Obama"]) == pytest.approx(0.8)
    # max over golds: second gold 'obama' -> P=1/3 R=1 -> 0.5 ; first gold 'george' -> 0
    assert f1_score("barack obama jr", ["George", "Obama"]) == pytest.approx(0.5)
    # repeated tokens use multiset overlap: pred [a1,a1,b] gold [a1,b,c]: overlap 2, P=2/3, R=2/3
    assert f1_score("a1 a1 b", "a1 b c") == pytest.approx(2 / 3)
    assert f1_score("the", ["the"]) == 0.0  # both empty after normalisation
    assert f1_score("", ["x"]) == 0.0
    assert f1_score(None, ["x"]) == 0.0


def test_extract_answer_last_and_tolerant():
    assert extract_answer("<answer> a </answer> then <answer>b</answer>") == "b"
    assert extract_answer("< Answer >  New York\n</ answer >") == "New York"
    assert extract_answer("<answer> a <answer> b </answer>") == "b"  # unbalanced open
    assert extract_answer("<answer> a </answer> tail </answer>") == "a"  # stray close
    assert extract_answer("<answer> a </answer> then <answer> unfinished") == "a"
    assert extract_answer("no tags at all") is None
    assert extract_answer("<answer> never closed") is None
    assert extract_answer("") is None
    assert extract_answer(None) is None
    assert extract_answer("<answer></answer>") == ""


def test_extract_answer_ignores_prompt_example():
    from zerosearch.rollout.protocol import policy_prompt

    prompt = policy_prompt("Who wrote Hamlet?")  # contains the example "<answer> Beijing </answer>"
    assert extract_answer(prompt) == "Beijing"  # why callers must pass only the response
    response = "<think>hmm</think><search>hamlet author</search>"
    assert extract_answer(response) is None
    assert score_response(response, ["Beijing"])["em"] == 0.0


def test_score_response():
    s = score_response("<think>x</think><answer> William Shakespeare </answer>", ["Shakespeare"])
    assert s["has_answer"] == 1.0
    assert s["em"] == 0.0
    assert s["cover_em"] == 1.0
    assert s["f1"] == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert score_response("no answer here", ["x"]) == {"f1": 0.0, "em": 0.0, "cover_em": 0.0, "has_answer": 0.0}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.one_of(st.text(max_size=30), st.lists(st.text(max_size=20), max_size=4)))
def test_scores_fuzz(pred, golds):
    for fn in (f1_score, exact_match, cover_exact_match):
        v = fn(pred, golds)
        assert 0.0 <= v <= 1.0
    s = score_response(pred, golds)
    assert all(0.0 <= v <= 1.0 for v in s.values())
