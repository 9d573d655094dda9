"""Tests for AlpacaEval-style raw and length-controlled win rates (backforth.evaluate.winrate)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backforth.evaluate import winrate as W
from backforth.evaluate.winrate import judgements_summary, length_controlled_win_rate, win_rate


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _judgements(seed: int, n: int, *, mean_gap: float, quality: float, length_bias: float, gap_sd: float = 400.0):
    """Synthetic judgements: P(model wins) = sigmoid(quality + length_bias * tanh(delta / std(delta)))."""
    rng = np.random.default_rng(seed)
    base = rng.normal(1200, 300, n).clip(50)
    model = (base + rng.normal(mean_gap, gap_sd, n)).clip(50)
    delta = model - base
    p = _sigmoid(quality + length_bias * np.tanh(delta / delta.std(ddof=1)))
    prefs = np.where(rng.random(n) < p, 2.0, 1.0)
    return prefs, model, base, p


# ------------------------------------------------------------------------------------------- raw


def test_all_wins_and_all_losses():
    wins = win_rate([2, 2, 2, 2])
    assert wins == {"win_rate": 100.0, "standard_error": 0.0, "n_wins": 4, "n_wins_base": 0, "n_draws": 0, "n_total": 4}
    losses = win_rate([1, 1, 1])
    assert losses["win_rate"] == 0.0 and losses["standard_error"] == 0.0
    assert (losses["n_wins"], losses["n_wins_base"], losses["n_total"]) == (0, 3, 3)


@pytest.mark.parametrize("draw", [1.5, 0])
def test_draws_count_half_either_encoding(draw):
    # shares 1, 1, 0, .5, .5 -> mean .6; deviations .4 .4 -.6 -.1 -.1 -> var .70/4, sem sqrt(.175/5)
    out = win_rate([2, 2, 1, draw, draw])
    assert out["win_rate"] == pytest.approx(60.0)
    assert out["standard_error"] == pytest.approx(100 * math.sqrt(0.175 / 5))  # 18.7083
    assert (out["n_wins"], out["n_wins_base"], out["n_draws"], out["n_total"]) == (2, 1, 2, 5)


def test_soft_preferences():
    out = win_rate([1.25, 1.75])  # shares .25 .75: mean .5, sd sqrt(.125), sem .25
    assert out["win_rate"] == pytest.approx(50.0)
    assert out["standard_error"] == pytest.approx(25.0)
    assert (out["n_wins"], out["n_wins_base"], out["n_draws"]) == (1, 1, 0)
    mixed = win_rate([1.2, 1.9, 1.5, 0])
    assert mixed["win_rate"] == pytest.approx(100 * (0.2 + 0.9 + 0.5 + 0.5) / 4)
    assert (mixed["n_wins"], mixed["n_wins_base"], mixed["n_draws"]) == (1, 1, 2)


def test_standard_error_hand_computed_and_alpacaeval_number():
    # shares 1, 0, .5: sd .5 (ddof=1), sem .5 / sqrt(3)
    assert win_rate([2, 1, 1.5])["standard_error"] == pytest.approx(100 * 0.5 / math.sqrt(3))
    # a published AlpacaEval result row: 44 wins, 56 losses -> win_rate 44.0, standard_error 4.988876515698589
    out = win_rate([2] * 44 + [1] * 56)
    assert out["win_rate"] == pytest.approx(44.0)
    assert out["standard_error"] == pytest.approx(4.988876515698589, rel=1e-12)


def test_single_row_has_nan_standard_error():
    out = win_rate([2])
    assert out["win_rate"] == 100.0 and math.isnan(out["standard_error"])


@pytest.mark.parametrize("bad", [0.5, 2.5, -1, 3, float("nan"), None, "x", True])
def test_invalid_preference_names_row(bad):
    with pytest.raises(ValueError, match="row 2"):
        win_rate([2, 1, bad, 1.5])


def test_empty_raises():
    with pytest.raises(ValueError):
        win_rate([])


# -------------------------------------------------------------------------------- length control


def test_lc_removes_planted_length_bias():
    prefs, model, base, _ = _judgements(7, 2000, mean_gap=400, quality=0.0, length_bias=2.0)
    raw = win_rate(prefs)["win_rate"]
    out = length_controlled_win_rate(prefs, model, base)
    assert raw > 65
    assert abs(out["lc_win_rate"] - 50) < 5
    assert out["length_coef"] > 1.0 and out["n"] == 2000 and out["difficulty_term"] is False


def test_lc_removes_bias_with_soft_preferences():
    _, model, base, p = _judgements(11, 1000, mean_gap=400, quality=0.0, length_bias=2.0)
    out = length_controlled_win_rate(1 + p, model, base)  # the judge's own probabilities as soft preferences
    assert win_rate(1 + p)["win_rate"] > 65
    assert abs(out["lc_win_rate"] - 50) < 2
    assert out["length_coef"] == pytest.approx(2.0, abs=0.2)


def test_lc_penalises_short_outputs_symmetrically():
    prefs, model, base, _ = _judgements(3, 2000, mean_gap=-400, quality=0.0, length_bias=2.0)
    assert win_rate(prefs)["win_rate"] < 35
    assert abs(length_controlled_win_rate(prefs, model, base)["lc_win_rate"] - 50) < 5


def test_lc_keeps_a_real_quality_gap_at_equal_length():
    prefs, model, base, _ = _judgements(5, 2000, mean_gap=0, quality=1.0, length_bias=0.0, gap_sd=300)
    raw = win_rate(prefs)["win_rate"]
    lc = length_controlled_win_rate(prefs, model, base)["lc_win_rate"]
    assert raw > 65
    assert abs(lc - raw) < 3


def test_lc_swapping_model_and_baseline_mirrors():
    prefs, model, base, _ = _judgements(13, 600, mean_gap=300, quality=0.3, length_bias=1.5)
    forward = length_controlled_win_rate(prefs, model, base)
    backward = length_controlled_win_rate(3 - prefs, base, model)
    assert forward["lc_win_rate"] + backward["lc_win_rate"] == pytest.approx(100, abs=1e-4)
    assert forward["length_coef"] == pytest.approx(backward["length_coef"], abs=1e-4)


def test_lc_difficulty_term_with_repeated_instructions():
    rng = np.random.default_rng(21)
    n_inst, reps = 400, 3
    inst = np.repeat(np.arange(n_inst), reps)
    difficulty = rng.normal(0, 1.5, n_inst)
    base = rng.normal(1200, 300, n_inst * reps).clip(50)
    model = (base + rng.normal(400, 400, n_inst * reps)).clip(50)
    delta = model - base
    p = _sigmoid(difficulty[inst] + 2.0 * np.tanh(delta / delta.std(ddof=1)))
    prefs = np.where(rng.random(len(p)) < p, 2.0, 1.0)
    truth = 100 * _sigmoid(difficulty).mean()  # equal lengths: judge's expected preference per instruction
    out = length_controlled_win_rate(prefs, model, base, instructions=[f"q{i}" for i in inst])
    assert out["difficulty_term"] is True
    assert win_rate(prefs)["win_rate"] - truth > 10
    assert abs(out["lc_win_rate"] - truth) < 5


def test_lc_unique_instructions_means_no_difficulty_term():
    prefs, model, base, _ = _judgements(2, 300, mean_gap=200, quality=0.2, length_bias=1.0)
    plain = length_controlled_win_rate(prefs, model, base)
    unique = length_controlled_win_rate(prefs, model, base, instructions=[f"q{i}" for i in range(300)])
    assert unique == plain and unique["difficulty_term"] is False


def test_lc_degenerate_inputs():
    assert length_controlled_win_rate([2, 2, 2], [10, 20, 30], [5, 5, 5]) == {
        "lc_win_rate": 100.0, "length_coef": 0.0, "n": 3, "difficulty_term": False}
    # no spread in length difference: the length effect is not identifiable, LC is the fitted intercept
    out = length_controlled_win_rate([2, 1, 2, 2] * 10, [100] * 40, [100] * 40)
    assert out["length_coef"] == 0.0
    assert out["lc_win_rate"] == pytest.approx(75.0, abs=1.0)


@pytest.mark.parametrize(
    ("model_lengths", "baseline_lengths", "match"),
    [([1, 2], [1, 2, 3], "model_lengths"),
     ([1, -2, 3], [1, 2, 3], "row 1"),
     ([1, 2, 3], [1, 2, float("nan")], "row 2")],
)
def test_lc_validates_lengths(model_lengths, baseline_lengths, match):
    with pytest.raises(ValueError, match=match):
        length_controlled_win_rate([2, 1, 1.5], model_lengths, baseline_lengths)


def test_solver_reaches_the_penalised_optimum():
    """The hand-written proximal Newton solver against a generic bounded quasi-Newton solve of the same objective."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(4)
    n, n_groups = 240, 40
    group = np.where(rng.random(n) < 0.8, rng.integers(0, n_groups, n), n_groups)  # some rows without offset
    design = W._Design(np.tanh(rng.normal(0.5, 1, n)), group, n_groups)
    target = rng.choice([0.0, 0.3, 0.5, 1.0], n)
    for C in (0.05, 2.0, 300.0):
        lam = 1 / (C * n)

        def split(x):  # |theta| and |phi| as positive and negative parts, offsets free
            return np.concatenate([x[:2] - x[2:4], x[4:]])

        def f(x):
            w = split(x)
            g = design.grad(W._sigmoid(design.logits(w)) - target) / n
            return (W._objective(design, target, w, lam),
                    np.concatenate([g[:2] + lam, -g[:2] + lam, g[2:] + lam * w[2:]]))

        ref = minimize(f, np.zeros(4 + n_groups), jac=True, method="L-BFGS-B",
                       bounds=[(0, None)] * 4 + [(None, None)] * n_groups, options={"ftol": 1e-15, "gtol": 1e-12})
        ours = W._fit_glm(design, target, C)
        assert W._objective(design, target, ours, lam) <= W._objective(design, target, split(ref.x), lam) + 1e-10


# --------------------------------------------------------------------------------------- summary


def test_summary_with_output_texts_uses_characters():
    prefs, model, base, _ = _judgements(9, 400, mean_gap=400, quality=0.0, length_bias=2.0)
    rows = [{"instruction": f"q{i}", "output_1": "b" * int(b), "output_2": "m" * int(m), "preference": float(p)}
            for i, (p, m, b) in enumerate(zip(prefs, model, base))]
    out = judgements_summary(rows)
    assert out["win_rate"] == pytest.approx(win_rate(prefs)["win_rate"])
    assert out["length_source"] == "characters"
    assert out["length_coef"] > 0  # output_2 (the model) is the longer one and the judge likes length
    assert out["lc_win_rate"] < out["win_rate"]
    assert out["difficulty_term"] is False


def test_summary_with_len_fields_and_without_lengths():
    rows = [{"preference": 2, "len_1": 10, "len_2": 30}, {"preference": 1, "len_1": 40, "len_2": 20},
            {"preference": 1.5, "len_1": 20, "len_2": 20, "output_1": "x", "output_2": "y"}]
    out = judgements_summary(rows)
    assert out["length_source"] == "len_1/len_2" and "lc_win_rate" in out
    assert out["n_total"] == 3 and out["win_rate"] == pytest.approx(50.0)
    no_lengths = judgements_summary([{"preference": 2}, {"preference": 1, "output_1": "a", "output_2": "bb"}])
    assert "lc_win_rate" not in no_lengths and no_lengths["win_rate"] == pytest.approx(50.0)


def test_summary_requires_preference():
    with pytest.raises(ValueError, match="row 1"):
        judgements_summary([{"preference": 2}, {"output_1": "a"}])
