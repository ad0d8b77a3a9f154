import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from tools import scoring
from tools.scoring import score_units, summarise, unit_scores


@pytest.fixture
def activations():
    rng = np.random.default_rng(0)
    concept = rng.normal(1.0, 1.0, size=(7, 5))
    control = rng.normal(0.0, 2.0, size=(40, 5))
    control[:, 4] = np.round(control[:, 4])  # ties
    concept[:, 4] = np.round(concept[:, 4])
    return concept, control


def test_auc_matches_sklearn_for_every_unit(activations):
    concept, control = activations
    table = score_units(concept, control)
    labels = np.r_[np.ones(len(concept)), np.zeros(len(control))]
    for unit in range(concept.shape[1]):
        expected = roc_auc_score(labels, np.r_[concept[:, unit], control[:, unit]])
        assert table["auc"][unit] == pytest.approx(expected)


def test_mad_and_mean_follow_cosy(activations):
    concept, control = activations
    table = score_units(concept, control)
    expected = (concept.mean(0) - control.mean(0)) / control.std(0)
    np.testing.assert_allclose(table["mad"], expected, rtol=1e-6)
    np.testing.assert_allclose(table["mean"], concept.mean(0))


def test_mann_whitney_matches_scipy(activations):
    concept, control = activations
    table = score_units(concept, control)
    for unit in range(concept.shape[1]):
        result = stats.mannwhitneyu(concept[:, unit], control[:, unit], alternative="greater", method="asymptotic")
        assert table["u"][unit] == pytest.approx(result.statistic)
        assert table["p"][unit] == pytest.approx(result.pvalue)


def test_separated_unit_scores_one_and_single_unit_view(activations):
    _, control = activations
    concept = control.max(axis=0) + np.arange(1, 4)[:, None]
    scores = unit_scores(score_units(concept, control), 2)
    assert scores.auc == 1.0 and scores.mad > 0 and scores.p < 0.01


def test_standard_error_of_mad_and_top_share(activations):
    concept, control = activations
    table = score_units(concept, control)
    se = concept.std(0, ddof=1) / np.sqrt(len(concept)) / control.std(0)
    np.testing.assert_allclose(table["mad_se"], se, rtol=1e-6)
    above = (concept > np.percentile(control, 99, axis=0)).mean(0)
    np.testing.assert_allclose(table["top_share"], above)
    assert (table["images"] == len(concept)).all()


def test_the_direct_count_and_the_ranking_agree_with_scipy_on_ties_and_a_kept_control_summary(monkeypatch):
    """A few concept images against a large control are counted directly; many are ranked
    with the control: both match scipy, with ties inside the concept, inside the control
    and between them, and with the control's summary computed once and reused."""
    rng = np.random.default_rng(1)
    control = np.maximum(rng.integers(-2, 4, size=(60, 6)), 0).astype(float)  # many zeros: a ReLU's ties
    concepts = [np.maximum(rng.integers(-1, 4, size=(n, 6)), 0).astype(float) for n in (1, 3, 8)]
    summary = summarise(control)
    for limit in (scoring._PAIRWISE_LIMIT, 0):  # 0: every call takes the ranking path
        monkeypatch.setattr(scoring, "_PAIRWISE_LIMIT", limit)
        for concept in concepts:
            kept, fresh = score_units(concept, control, summary), score_units(concept, control)
            for unit in range(concept.shape[1]):
                result = stats.mannwhitneyu(concept[:, unit], control[:, unit], alternative="greater", method="asymptotic")
                assert kept["u"][unit] == pytest.approx(result.statistic) == fresh["u"][unit]
                assert kept["p"][unit] == pytest.approx(result.pvalue) == pytest.approx(fresh["p"][unit])
