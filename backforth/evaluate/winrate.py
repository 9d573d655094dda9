"""AlpacaEval-style win rates of a fine-tuned model against a reference (baseline) output.

Conventions follow AlpacaEval (Li et al. 2023; Dubois et al. 2024, "Length-Controlled AlpacaEval: A
Simple Way to Debias Automatic Evaluators", arXiv:2404.04475) so that our numbers can be read next to
published leaderboards:

* ``preference`` per judged row: ``1`` = baseline (``output_1``) preferred, ``2`` = model
  (``output_2``) preferred, ``1.5`` or the legacy ``0`` = draw, anything strictly between 1 and 2 =
  soft preference with model share ``preference - 1``.
* Raw win rate = ``100 * mean(share)`` (a draw is half a win); standard error = ``100 *`` the sample
  standard error of the mean of the per-row shares (``ddof=1``, as ``pandas.Series.sem``).
* Length-controlled (LC) win rate: fit a regularised logistic GLM of the share on a model-identity
  intercept and a squashed length difference (plus per-instruction offsets when instructions
  repeat), then predict with the length difference set to zero and average over instructions
  (paper Sec. 3; ``alpaca_eval.metrics.glm_winrate``). numpy only: the small solver below
  replaces the liblinear call AlpacaEval makes.

Why our own solver and not scikit-learn's ``LogisticRegression``: without instruction offsets the
library gives the same fit (checked to 1e-8 on the tests' data), but with repeated instructions the
penalty here is mixed, L1 on the model and length terms and ridge on the per-instruction offsets, and
``LogisticRegression`` puts one penalty on every coefficient (no per-coefficient penalty factors, no
fixed offsets). L1 on the offsets too moves the LC win rate by about half a point on the
repeated-instruction test and stops at liblinear's iteration limit for large C; a generic optimiser
on the exact objective is about 100x slower. One solver for both cases is less code than two, and
keeps the raw win rate free of the scikit-learn dependency.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["win_rate", "length_controlled_win_rate", "judgements_summary"]

# Regularisation grid and folds as AlpacaEval's LogisticRegressionCV (Cs=10 -> logspace(-4, 4), 5 folds);
# below _MIN_CV_ROWS rows cross-validation is meaningless and AlpacaEval's non-CV default C=100 is used.
_C_GRID = np.logspace(-4, 4, 10)
_N_SPLITS = 5
_MIN_CV_ROWS = 2 * _N_SPLITS
_DEFAULT_C = 100.0
_CV_SEED = 123
_MAX_NEWTON, _MAX_CD_SWEEPS, _TOL = 200, 100, 1e-10


# ----------------------------------------------------------------------------------------------- raw


class PreferenceError(ValueError):
    """A preference value AlpacaEval would not read (not a number, NaN, a boolean, out of range)."""


def _model_shares(preferences: Sequence[float]) -> np.ndarray:
    """Per-row model share in [0, 1]; rejects anything AlpacaEval would not read as a preference.

    AlpacaEval silently drops NaN/invalid rows; we raise instead, because in backforth a NaN means a
    judge call failed and a silently smaller denominator would hide that.
    """
    shares = np.empty(len(preferences), dtype=float)
    for i, raw in enumerate(preferences):
        if isinstance(raw, (bool, np.bool_)):  # float(True) == 1.0 would silently mean "baseline wins"
            raise PreferenceError(f"row {i}: preference {raw!r} is a boolean, not a number")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise PreferenceError(f"row {i}: preference {raw!r} is not a number") from None
        if math.isnan(value):
            raise PreferenceError(f"row {i}: preference is NaN (failed judgement?)")
        if value == 0.0:
            value = 1.5  # legacy AlpacaEval encoding of a draw
        if not 1.0 <= value <= 2.0:
            raise PreferenceError(f"row {i}: preference {value!r} is outside {{0}} ∪ [1, 2]")
        shares[i] = value - 1.0
    return shares


def win_rate(preferences: Sequence[float]) -> dict:
    """Raw AlpacaEval win rate of the model over the baseline, in percent.

    Matches ``AbsoluteScoringRule.describe_head2head`` of AlpacaEval: ``0`` is mapped to ``1.5`` first;
    ``n_draws`` counts rows exactly at 1.5 (so a soft 1.5 is a draw too), ``n_wins`` rows with
    preference > 1.5 and ``n_wins_base`` rows < 1.5 (soft preferences count by which side they lean).
    ``standard_error`` is NaN for a single row, as pandas' ``sem`` is.
    """
    shares = _model_shares(list(preferences))
    n = len(shares)
    if n == 0:
        raise ValueError("no preferences to compute a win rate from")
    se = float(np.std(shares, ddof=1) / math.sqrt(n) * 100) if n > 1 else float("nan")
    return {
        "win_rate": float(shares.mean() * 100),
        "standard_error": se,
        "n_wins": int((shares > 0.5).sum()),
        "n_wins_base": int((shares < 0.5).sum()),
        "n_draws": int((shares == 0.5).sum()),
        "n_total": n,
    }


# ------------------------------------------------------------------------------------ length control


@dataclass(frozen=True)
class _Design:
    """GLM inputs. Parameters are ``[theta, phi, alpha_0, ..., alpha_{G-1}]`` and the logit of row i is
    ``theta + phi * length[i] + alpha[group[i]]``; ``group[i] == n_groups`` means "no offset" (alpha = 0).
    Indexing offsets by group avoids materialising a one-hot matrix.
    """

    length: np.ndarray  # (n,) tanh(standardised length difference)
    group: np.ndarray  # (n,) int in [0, n_groups]
    n_groups: int

    def subset(self, rows: np.ndarray) -> _Design:
        return _Design(self.length[rows], self.group[rows], self.n_groups)

    def logits(self, w: np.ndarray) -> np.ndarray:
        return w[0] + w[1] * self.length + np.append(w[2:], 0.0)[self.group]

    def group_sums(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.group, weights=values, minlength=self.n_groups + 1)[: self.n_groups]

    def grad(self, residual: np.ndarray) -> np.ndarray:
        """Gradient of sum(loss) w.r.t. the parameters given residual = sigmoid(logit) - target."""
        return np.concatenate([[residual.sum(), residual @ self.length], self.group_sums(residual)])


def _soft_log_loss(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-row cross-entropy with fractional targets.

    Same as AlpacaEval's duplication of each row into a 1 with weight y and a 0 with weight 1 - y.
    """
    return target * np.logaddexp(0.0, -logits) + (1.0 - target) * np.logaddexp(0.0, logits)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


def _soft_threshold(x: float, t: float) -> float:
    return float(np.sign(x) * max(abs(x) - t, 0.0))


def _penalty(w: np.ndarray, lam: float) -> float:
    """L1 on theta and phi (as AlpacaEval), ridge on instruction offsets (see ``length_controlled_win_rate``)."""
    return lam * (abs(w[0]) + abs(w[1])) + 0.5 * lam * float(w[2:] @ w[2:])


def _objective(design: _Design, target: np.ndarray, w: np.ndarray, lam: float) -> float:
    return float(_soft_log_loss(design.logits(w), target).mean()) + _penalty(w, lam)


def _newton_direction(design: _Design, w: np.ndarray, resid: np.ndarray, h: np.ndarray, lam: float) -> np.ndarray:
    """Minimise the penalised quadratic model of the mean loss around ``w``; returns the step.

    Block coordinate descent over two blocks. (1) theta jointly with all offsets, exactly: for a
    given theta each offset's optimum is linear in theta (rows belong to one instruction), so
    theta's profiled problem is a 1-D quadratic plus |theta|, solved by soft-thresholding. Updating
    theta alone would crawl, because shifting theta up and every offset down is nearly free.
    (2) phi, by an ordinary soft-thresholded coordinate step. ``q`` is the per-row gradient of the
    quadratic model at ``w + delta``.
    """
    n = len(resid)
    delta, q = np.zeros(len(w)), resid / n
    h = h / n
    h_len = float(h @ design.length**2)
    h_group = design.group_sums(h)
    shrink = lam / (h_group + lam)  # the fraction of a theta shift that the offsets do NOT cancel
    curvature = float(h.sum() - h_group.sum() + h_group @ shrink)
    for _ in range(_MAX_CD_SWEEPS):
        old = delta.copy()
        # (1) theta and offsets: alpha_g(a) = (h_g * alpha_g - q_g - h_g * a) / (h_g + lam) after a theta change a.
        theta, alpha = w[0] + delta[0], w[2:] + delta[2:]
        q_group = design.group_sums(q)
        base = -(q_group + lam * alpha) / (h_group + lam)  # offset change if theta stays put
        slope = float(q.sum() + h_group @ base)
        if curvature > 0:
            a = _soft_threshold(theta - slope / curvature, lam / curvature) - theta
            change = base - a * h_group / (h_group + lam)
            delta[0] += a
            delta[2:] += change
            q += h * (a + np.append(change, 0.0)[design.group])
        # (2) phi
        if h_len > 0:  # no length spread: phi stays 0
            phi = w[1] + delta[1]
            b = _soft_threshold(phi - float(q @ design.length) / h_len, lam / h_len) - phi
            delta[1] += b
            q += h * design.length * b
        if np.abs(delta - old).max() < _TOL:
            break
    return delta


def _fit_glm(design: _Design, target: np.ndarray, C: float) -> np.ndarray:
    """Fit the penalised logistic GLM, objective ``penalty + C * sum(loss)`` in liblinear's scaling.

    No free intercept: theta, the model-identity coefficient, plays that role (AlpacaEval's formula
    ends in ``- 1``). Proximal Newton steps with Armijo backtracking (as liblinear's newGLMNET L1
    solver, Yuan et al. 2012); everything is divided by ``C * n`` so tolerances do not depend on n.
    """
    n = len(target)
    lam = 1.0 / (C * n)
    w = np.zeros(2 + design.n_groups)
    value = _objective(design, target, w, lam)
    for _ in range(_MAX_NEWTON):
        p = _sigmoid(design.logits(w))
        delta = _newton_direction(design, w, p - target, np.maximum(p * (1 - p), 1e-12), lam)
        predicted = float(design.grad(p - target) @ delta) / n + _penalty(w + delta, lam) - _penalty(w, lam)
        if np.abs(delta).max() < _TOL or predicted >= 0:
            break
        step = 1.0
        while True:
            new_w = w + step * delta
            new_value = _objective(design, target, new_w, lam)
            if new_value <= value + 0.01 * step * predicted or step < 1e-8:
                break
            step /= 2
        done = np.abs(step * delta).max() < 1e-9 or value - new_value <= 1e-14 * max(1.0, abs(value))
        w, value = new_w, new_value
        if done:
            break
    return w


def _select_C(design: _Design, target: np.ndarray) -> float:
    """Pick C by 5-fold cross-validated soft log-loss, like AlpacaEval's ``LogisticRegressionCV``.

    Folds are a fixed-seed permutation of rows (a row's two duplicated 0/1 copies stay together, as
    AlpacaEval's GroupKFold ensures). Ties go to the smaller C, as in sklearn.
    """
    n = len(target)
    if n < _MIN_CV_ROWS:
        return _DEFAULT_C
    fold = np.random.default_rng(_CV_SEED).permutation(n) % _N_SPLITS
    losses = np.zeros(len(_C_GRID))
    for k in range(_N_SPLITS):
        train, test = fold != k, fold == k
        for j, C in enumerate(_C_GRID):
            w = _fit_glm(design.subset(train), target[train], C)
            losses[j] += _soft_log_loss(design.subset(test).logits(w), target[test]).sum()
    return float(_C_GRID[int(np.argmin(losses))])


def _length_feature(model_lengths: np.ndarray, baseline_lengths: np.ndarray) -> np.ndarray:
    """``tanh(delta / std(delta))`` with ``delta = model - baseline`` (paper Eq. for the length mediator).

    tanh bounds the influence of extreme length gaps, so a model cannot buy unbounded credit (or
    penalty) by length alone. With zero spread (e.g. every pair equally long) the length effect is not
    identifiable apart from the intercept, so the feature is set to 0 and its coefficient stays 0.
    """
    delta = model_lengths - baseline_lengths
    sd = float(np.std(delta, ddof=1)) if len(delta) > 1 else 0.0
    if not sd > 0:
        return np.zeros_like(delta)
    return np.tanh(delta / sd)


def _instruction_groups(instructions: Sequence[str] | None, n: int) -> tuple[np.ndarray, int, int]:
    """Offset index per row, number of offsets, number of distinct instructions.

    Offsets are used only when instructions repeat enough (on average >= 2 judgements per distinct
    instruction, and >= 2 distinct instructions); only repeated instructions get an offset, since a
    free offset for a single judgement would just memorise it.
    """
    if instructions is None:
        return np.zeros(n, dtype=int), 0, n
    if len(instructions) != n:
        raise ValueError(f"instructions has {len(instructions)} rows, preferences has {n}")
    keys, inverse, counts = np.unique(np.asarray([str(x) for x in instructions]), return_inverse=True,
                                      return_counts=True)
    n_distinct = len(keys)
    if n_distinct < 2 or n < 2 * n_distinct:
        return np.zeros(n, dtype=int), 0, n_distinct
    repeated = np.flatnonzero(counts >= 2)
    index_of = np.full(n_distinct, len(repeated))
    index_of[repeated] = np.arange(len(repeated))
    return index_of[inverse], len(repeated), n_distinct


def _as_lengths(values: Sequence[float], name: str, n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.shape != (n,):
        raise ValueError(f"{name} has shape {arr.shape}, expected ({n},)")
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
    if len(bad):
        raise ValueError(f"row {int(bad[0])}: {name} value {arr[bad[0]]!r} is not a finite length >= 0")
    return arr


def length_controlled_win_rate(
    preferences: Sequence[float],
    model_lengths: Sequence[float],
    baseline_lengths: Sequence[float],
    instructions: Sequence[str] | None = None,
) -> dict:
    """Length-controlled win rate of AlpacaEval 2.0 (Dubois et al. 2024, arXiv:2404.04475), in percent.

    The paper fits ``P(model preferred) = sigmoid((theta_m - theta_b) + phi * tanh(delta / std(delta))
    + (psi_m - psi_b) * gamma_x)`` and reports ``100 * mean_x sigmoid(...)`` with the length term
    zeroed: "what would the judge prefer if both outputs had the same length". Here:

    * (a) model identity: one coefficient ``theta`` (= theta_m - theta_b; only one pair is compared).
    * (b) length: ``phi * tanh(delta / std(delta))``, ``delta = model_length - baseline_length``
      (std with ddof=1). NB: AlpacaEval uses baseline minus model, so its coefficient has the
      opposite sign; here ``length_coef > 0`` means the judge favours the longer output.
    * (c) instruction difficulty: AlpacaEval uses a per-instruction ``gamma_x`` precomputed from
      judgements of >100 leaderboard models against the same baseline, and fits one coefficient on
      it. One model against one baseline gives one judgement per instruction, from which a
      per-instruction difficulty cannot be estimated (a free offset per row would fit every judgement
      exactly), and we have no leaderboard to borrow gamma_x from. So by default the term is OMITTED.
      When ``instructions`` is given and instructions repeat (on average >= 2 judgements per distinct
      instruction, e.g. several samples or both judge orderings), we add an offset ``alpha_x`` per
      repeated instruction (singletons get none), a superset of ``(psi_m - psi_b) * gamma_x``, and
      average the length-zeroed prediction ``sigmoid(theta + alpha_x)`` over distinct instructions,
      so that the sigmoid's nonlinearity across easy/hard instructions is respected as in the paper.
      The offsets get a ridge penalty (a Gaussian random effect shrinking each instruction towards
      the common theta, the usual model of item difficulty) rather than L1: under L1, moving theta
      up and every offset down costs almost nothing, so theta would be arbitrary and slow to fit.

    Fitting: soft shares are fractional log-loss targets (equivalent to AlpacaEval's weighted 0/1
    duplication). The objective is ``|theta| + |phi| + ||alpha||^2 / 2 + C * sum(log-loss)``: L1 on
    theta and phi as AlpacaEval (liblinear, ``penalty="l1"``), with C chosen from
    ``logspace(-4, 4, 10)`` by 5-fold cross-validated log-loss (AlpacaEval's LogisticRegressionCV);
    with < 10 rows, C = 100 (its non-CV default). AlpacaEval additionally regularises the length
    coefficient towards its value for verbosity-prompted versions of the baseline; we have no such
    judgements, so the penalty shrinks towards 0 instead. If every row is an outright win (or every
    row a loss) nothing can be adjusted and the raw win rate is returned with ``length_coef = 0``.
    Like any regression, the estimate is noisy on small sets (a few dozen rows): read it with the
    raw win rate's standard error in mind.

    Returns ``{"lc_win_rate", "length_coef", "n", "difficulty_term"}``; the last says whether (c) was used.
    """
    shares = _model_shares(list(preferences))
    n = len(shares)
    if n == 0:
        raise ValueError("no preferences to compute a win rate from")
    model_len = _as_lengths(model_lengths, "model_lengths", n)
    base_len = _as_lengths(baseline_lengths, "baseline_lengths", n)
    group, n_groups, n_distinct = _instruction_groups(instructions, n)

    if np.all(shares == shares[0]) and shares[0] in (0.0, 1.0):
        return {"lc_win_rate": float(shares[0] * 100), "length_coef": 0.0, "n": n, "difficulty_term": False}

    design = _Design(_length_feature(model_len, base_len), group, n_groups)
    params = _fit_glm(design, shares, _select_C(design, shares))
    theta, phi = float(params[0]), float(params[1])
    # Distinct instructions without an offset (singletons) contribute sigmoid(theta) each.
    offsets = np.concatenate([params[2:], np.zeros(n_distinct - n_groups)])
    lc = float(_sigmoid(theta + offsets).mean() * 100)
    return {"lc_win_rate": lc, "length_coef": phi, "n": n, "difficulty_term": n_groups > 0}


# ------------------------------------------------------------------------------------------- summary


def _row_lengths(row: Mapping) -> tuple[float, float, str] | None:
    """(baseline length, model length, source) of one annotation row, or None when unknown.

    Explicit ``len_1``/``len_2`` win; otherwise the character count of ``output_1``/``output_2``
    (characters, as AlpacaEval's ``str.len()``; not tokens).
    """
    if row.get("len_1") is not None and row.get("len_2") is not None:
        return float(row["len_1"]), float(row["len_2"]), "len_1/len_2"
    if isinstance(row.get("output_1"), str) and isinstance(row.get("output_2"), str):
        return float(len(row["output_1"])), float(len(row["output_2"])), "characters"
    return None


def judgements_summary(rows: Iterable[Mapping]) -> dict:
    """Win-rate summary of AlpacaEval-style annotation rows (what ``backforth eval winrate FILE`` prints).

    Each row needs ``preference``; ``output_1`` is the baseline and ``output_2`` the model, as in
    AlpacaEval. When every row has lengths (``len_1``/``len_2``, else characters of the outputs) the
    result also has ``lc_win_rate``, ``length_coef``, ``difficulty_term`` and ``length_source``
    (``"characters"``, ``"len_1/len_2"`` or ``"mixed"``). ``instruction`` is passed on when every row has one.
    """
    rows = list(rows)
    prefs = []
    for i, row in enumerate(rows):
        if "preference" not in row:
            raise ValueError(f"row {i}: no 'preference' field")
        prefs.append(row["preference"])
    summary = win_rate(prefs)

    lengths = [_row_lengths(row) for row in rows]
    if not rows or any(x is None for x in lengths):
        return summary
    instructions = [row.get("instruction") for row in rows]
    lc = length_controlled_win_rate(
        prefs,
        model_lengths=[x[1] for x in lengths],
        baseline_lengths=[x[0] for x in lengths],
        instructions=None if any(x is None for x in instructions) else instructions,
    )
    sources = {x[2] for x in lengths}
    summary.update(
        lc_win_rate=lc["lc_win_rate"],
        length_coef=lc["length_coef"],
        difficulty_term=lc["difficulty_term"],
        length_source=sources.pop() if len(sources) == 1 else "mixed",
    )
    return summary
