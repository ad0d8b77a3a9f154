"""The one criterion: ordering with the AUC gate, LINE's 'better', parsimony, and the words."""

import pytest

from tools.criterion import Criterion
from tools.scoring import Scores


def scores(auc=1.0, mad=1.0, se=0.1, top=1.0, images=4) -> Scores:
    return Scores(auc=auc, mad=mad, mean=mad, u=0.0, p=0.01, mad_se=se, top_share=top, images=images)


ITEMS = {"weak look-alike": scores(auc=1.0, mad=2.0), "strong": scores(auc=0.97, mad=20.0),
         "one wild image": scores(auc=0.80, mad=60.0, top=0.25)}


def ranked(criterion: Criterion) -> list[str]:
    return criterion.order(list(ITEMS), ITEMS.get)


def test_each_criterion_orders_the_same_concepts_its_own_way():
    assert ranked(Criterion("auc")) == ["weak look-alike", "strong", "one wild image"]
    assert ranked(Criterion("mad")) == ["one wild image", "strong", "weak look-alike"]
    # the gate keeps the concept that fires on one image of four out; MAD decides among the rest
    assert ranked(Criterion("gated-mad")) == ["strong", "weak look-alike", "one wild image"]
    assert ranked(Criterion("top-share")) == ["strong", "weak look-alike", "one wild image"]
    assert ranked(Criterion("gated-mad", auc_gate=0.25)) == ["one wild image", "strong", "weak look-alike"]


def test_better_compares_two_concepts_like_the_order_does():
    gated = Criterion("gated-mad")
    assert gated.better(ITEMS["strong"], ITEMS["weak look-alike"])
    assert gated.better(ITEMS["weak look-alike"], ITEMS["one wild image"])
    assert not gated.better(ITEMS["weak look-alike"], ITEMS["strong"])


def test_a_shorter_concept_wins_only_when_it_is_as_strong():
    gated = Criterion("gated-mad")
    close = {"red polka dots on white background": scores(mad=10.0, se=0.5), "red polka dots": scores(mad=9.5, se=0.4)}
    choice = gated.choose(list(close), close.get, str)
    assert choice.winner == "red polka dots" and "as strong" in choice.reason
    assert gated.choose(list(close), close.get, str, parsimony=False).winner == "red polka dots on white background"
    far = {"red polka dots on white background": scores(mad=10.0, se=0.1), "red polka dots": scores(mad=8.0, se=0.1)}
    assert gated.choose(list(far), far.get, str).winner == "red polka dots on white background"
    below_gate = {"long strong concept": scores(auc=1.0, mad=10.0, se=2.0), "short": scores(auc=0.9, mad=10.0, se=2.0)}
    assert gated.choose(list(below_gate), below_gate.get, str).winner == "long strong concept"


def test_the_reason_names_the_criterion_and_the_figures():
    choice = Criterion("gated-mad").choose(list(ITEMS), ITEMS.get, str)
    assert choice.winner == "strong" and "MAD 20.00" in choice.reason and "gate: AUC ≥ 0.950" in choice.reason
    assert "highest AUC (1.000)" in Criterion("auc").choose(list(ITEMS), ITEMS.get, str).reason


def test_nothing_to_choose_from_is_an_error():
    with pytest.raises(ValueError):
        Criterion().choose([], lambda s: s, str)


def test_finalists_take_the_best_of_the_criterion_of_auc_and_of_mad_in_turn():
    # on a few images the gate can hide the strongest concept, and AUC alone a steadier one
    finalists = Criterion("gated-mad").finalists(list(ITEMS), ITEMS.get, 3)
    assert finalists == [("strong", "top 1 by gated-mad"), ("weak look-alike", "top 1 by auc"),
                         ("one wild image", "top 1 by mad")]
    assert [c for c, _ in Criterion("auc").finalists(list(ITEMS), ITEMS.get, 2)] == ["weak look-alike", "one wild image"]
    # one concept first in every view: the second of each view fills the places
    alone = {"best": scores(auc=1.0, mad=9.0), "second": scores(auc=0.99, mad=5.0), "third": scores(auc=0.9, mad=1.0)}
    assert Criterion("gated-mad").finalists(list(alone), alone.get, 2) == [("best", "top 1 by gated-mad"),
                                                                          ("second", "top 2 by gated-mad")]
    assert len(Criterion().finalists(list(alone), alone.get, 10)) == 3


def test_shorter_lists_the_concepts_as_strong_as_the_best_shortest_first():
    close = {"plain red on white background": scores(mad=10.0), "plain red": scores(mad=10.0),
             "plain": scores(mad=10.0), "red": scores(mad=2.0)}
    assert Criterion().shorter(list(close), close.get, str) == ["plain", "plain red"]
