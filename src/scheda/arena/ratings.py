"""The arena's ratings: the Bradley-Terry model fitted by maximum likelihood, on the Elo scale,
with 95% intervals by bootstrap, as Chatbot Arena computes its leaderboard today (lm-sys
FastChat, `fastchat/serve/monitor/elo_analysis.py`: `compute_mle_elo`,
`get_bootstrap_result`).

The model: model i has a strength beta_i, and i is judged better than j with probability
sigmoid(beta_i - beta_j). On the Elo scale a rating is INIT + SCALE / ln(BASE) * beta
(SCALE 400, BASE 10): 400 points apart, the better model wins ten times out of eleven.

- A tie and a "both bad" vote are half a win for each side, as Chatbot Arena counts "tie" and
  "tie (bothbad)": the likelihood of a battle is sigmoid(d)^s * sigmoid(-d)^(1 - s), with s
  the points of the first model (1, 0.5 or 0). The column a model sat in does not count.
- The ratings are anchored by their mean: the models in the games average INIT, 1000.
  Chatbot Arena anchors one reference model at a fixed rating instead (mixtral-8x7b-instruct
  at 1114), which only shifts every rating by the same amount.
- Chatbot Arena fits it with sklearn's LogisticRegression(C=1e6); here Newton's method on the
  log-likelihood does it in numpy (it is concave; a backtracking line search keeps every step
  uphill). The same very weak Gaussian prior on the strengths, precision 1e-6 (a standard
  deviation of 1000 natural units), makes the optimum unique and finite: a model that won
  every game gets a large, finite rating (some 2000 points above the model it beat once)
  where the unpenalised likelihood has none (it grows without bound). With data that
  separates no model, the prior moves a rating by far less than a hundredth of a point.
- The intervals: the battles resampled with replacement `rounds` times, each resample fitted
  again, the 2.5th and 97.5th percentiles of each model's rating. A resample is drawn as the
  counts of each kind of battle (pair and outcome), one multinomial draw per round, which is
  the same distribution as drawing the battles one by one and costs nothing per battle; the
  rounds are fitted together, one batched Newton step for all of them at a time. A round in
  which a model drew no battle says nothing of it and is left out of its interval.

For the maximum-likelihood estimate of the Bradley-Terry model, and the MM algorithm the tests
check this one against: D. R. Hunter (2004), "MM algorithms for generalized Bradley-Terry
models", Annals of Statistics 32(1), 384-406.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Outcome = Literal["a", "b", "tie", "bad"]  # A better, B better, tie, both bad

SCALE = 400.0
BASE = 10.0
INIT = 1000.0
ELO_PER_UNIT = SCALE / math.log(BASE)  # Elo points per unit of natural log-odds
PRIOR_PRECISION = 1e-6  # the Gaussian prior's 1/variance, in natural units (sklearn's 1/C)

# The points of the model in column A for each vote: a tie or "both bad" is half a win each.
POINTS_OF_A: dict[str, float] = {"a": 1.0, "b": 0.0, "tie": 0.5, "bad": 0.5}

# Newton stops when every round's Newton decrement (grad . step, twice the distance to the
# optimum in log-likelihood) is below this: a rating is then within 0.2 points of the optimum
# even along the flattest direction (an undefeated model's, where only the prior curves the
# objective), and in practice far closer, since Newton's last steps square the error.
_DECREMENT = 1e-12
_MOST_STEPS = 200
_HALVINGS = 30  # the line search tries steps 1, 1/2, ... 1/2**29

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Game:
    """One voted battle: the models in columns A and B, and the vote (one of `Outcome`)."""

    a: str
    b: str
    outcome: str


@dataclass(frozen=True)
class Standing:
    """One model's line of the leaderboard."""

    model: str
    rating: float  # Elo scale, the mean of all models at 1000
    lower: float  # 95% bootstrap interval
    upper: float
    games: int
    wins: int
    losses: int
    ties: int  # ties and both-bad together
    both_bad: int


@dataclass(frozen=True)
class Leaderboard:
    """The ratings of the models in the voted battles, best first, and who beat whom."""

    standings: list[Standing]
    # matrix[x][y]: x's share of the points against y (win 1, tie or both bad 0.5), only for
    # pairs that met.
    matrix: dict[str, dict[str, float]]
    battles: int
    rounds: int  # bootstrap rounds

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for `--json` and the API."""
        return {
            "battles": self.battles,
            "rounds": self.rounds,
            "standings": [asdict(standing) for standing in self.standings],
            "matrix": {x: dict(row) for x, row in self.matrix.items()},
        }


@dataclass(frozen=True)
class _Tally:
    """The games counted by unordered pair: pair p is models first[p] < second[p], and
    counts[p] holds how often first won, tied (or both bad), lost."""

    models: list[str]
    first: Ints
    second: Ints
    counts: Floats  # (pairs, 3)


def fit(games: Sequence[Game]) -> dict[str, float]:
    """Each model's rating on the Elo scale (their mean 1000): the maximum-likelihood
    Bradley-Terry fit, ties and both-bad half a win each. No games, no ratings."""
    tally = _tally(games)
    if not tally.models:
        return {}
    ratings = _ratings(tally, tally.counts[None])[0]
    return {model: float(r) for model, r in zip(tally.models, ratings, strict=True)}


def leaderboard(games: Sequence[Game], rounds: int = 1000, seed: int = 0) -> Leaderboard:
    """The standings best first, each with its 95% bootstrap interval over `rounds`
    resamples of the battles (drawn from a numpy Generator seeded with `seed`), and the
    matrix of points shares. A model in no game is absent."""
    if rounds < 0:
        raise ValueError(f"bootstrap rounds must be 0 or more, not {rounds}")
    tally = _tally(games)
    if not tally.models:
        return Leaderboard(standings=[], matrix={}, battles=0, rounds=rounds)
    rating = _ratings(tally, tally.counts[None])[0]
    lower, upper = _intervals(tally, rating, rounds, seed)
    standings = _standings(games, tally.models, rating, lower, upper)
    order = [s.model for s in standings]
    return Leaderboard(
        standings=standings, matrix=_matrix(games, order), battles=len(games), rounds=rounds
    )


def _tally(games: Sequence[Game]) -> _Tally:
    """Count the games by unordered pair and result; a game that cannot be is a bug."""
    for game in games:
        if game.outcome not in POINTS_OF_A:
            raise ValueError(f"unknown outcome {game.outcome!r}: one of {sorted(POINTS_OF_A)}")
        if game.a == game.b:
            raise ValueError(f"a battle of {game.a!r} against itself cannot be rated")
    models = sorted({game.a for game in games} | {game.b for game in games})
    index = {model: i for i, model in enumerate(models)}
    pairs: dict[tuple[int, int], list[float]] = {}
    for game in games:
        i, j, points = index[game.a], index[game.b], POINTS_OF_A[game.outcome]
        if i > j:
            i, j, points = j, i, 1.0 - points
        row = pairs.setdefault((i, j), [0.0, 0.0, 0.0])
        row[0 if points == 1.0 else 1 if points == 0.5 else 2] += 1.0
    keys = sorted(pairs)
    return _Tally(
        models=models,
        first=np.array([i for i, _ in keys], dtype=np.int64),
        second=np.array([j for _, j in keys], dtype=np.int64),
        counts=np.array([pairs[key] for key in keys], dtype=np.float64).reshape(-1, 3),
    )


def _ratings(tally: _Tally, counts: Floats) -> Floats:
    """Elo ratings (rounds, models) for counts (rounds, pairs, 3), one fit per round."""
    games = counts.sum(axis=2)
    points = counts[:, :, 0] + 0.5 * counts[:, :, 1]
    beta = _newton(_incidence(tally), games, points)
    # At the optimum the strengths already average zero (the prior sees to it); centring
    # removes what is left of the solver's tolerance.
    ratings: Floats = INIT + ELO_PER_UNIT * (beta - beta.mean(axis=1, keepdims=True))
    return ratings


def _incidence(tally: _Tally) -> Floats:
    """(pairs, models): +1 for the pair's first model, -1 for its second."""
    pairs = np.arange(len(tally.first))
    matrix = np.zeros((len(pairs), len(tally.models)))
    matrix[pairs, tally.first] = 1.0
    matrix[pairs, tally.second] = -1.0
    return matrix


def _objective(beta: Floats, incidence: Floats, games: Floats, points: Floats) -> Floats:
    """The penalised log-likelihood of each round (the last axis of beta holds the models).

    Besides the prior, half the squared sum of the strengths: the likelihood does not see a
    shift of all of them, the prior's optimum has sum zero anyway, so this term changes no
    optimum; it only keeps the Hessian well conditioned along that shift, where the weak
    prior alone would curve it by 1e-6.
    """
    d = beta @ incidence.T
    loglik = -(points * np.logaddexp(0.0, -d) + (games - points) * np.logaddexp(0.0, d))
    total = beta.sum(axis=-1)
    penalty = 0.5 * PRIOR_PRECISION * (beta**2).sum(axis=-1) + 0.5 * total**2
    result: Floats = loglik.sum(axis=-1) - penalty
    return result


def _newton(incidence: Floats, games: Floats, points: Floats) -> Floats:
    """The strengths (rounds, models) that maximise `_objective`, every round at once."""
    rounds, models = games.shape[0], incidence.shape[1]
    beta = np.zeros((rounds, models))
    # Each pair's outer product of its incidence row, so that the Hessian of all rounds is
    # one matrix product: sum over pairs of weight * row row^T.
    outer = (incidence[:, :, None] * incidence[:, None, :]).reshape(len(incidence), -1)
    fixed = PRIOR_PRECISION * np.eye(models) + np.ones((models, models))
    active = np.arange(rounds)
    for _ in range(_MOST_STEPS):
        b, n, s = beta[active], games[active], points[active]
        d = b @ incidence.T
        win, lose = _sigmoid(d), _sigmoid(-d)
        gradient = (s - n * win) @ incidence - PRIOR_PRECISION * b
        gradient -= b.sum(axis=1, keepdims=True)
        hessian = ((n * win * lose) @ outer).reshape(-1, models, models) + fixed
        step = np.linalg.solve(hessian, gradient[:, :, None])[:, :, 0]
        decrement = (gradient * step).sum(axis=1)
        moving = decrement > _DECREMENT
        active, b, step, n, s = active[moving], b[moving], step[moving], n[moving], s[moving]
        length = _step_length(b, step, decrement[moving], incidence, n, s)
        beta[active] = b + length[:, None] * step
        # A round that no step raises any more is at its optimum, to rounding: it is done.
        active = active[length > 0]
        if not len(active):
            break
    return beta


def _step_length(
    beta: Floats, step: Floats, decrement: Floats, incidence: Floats, games: Floats, points: Floats
) -> Floats:
    """Per round, the longest of 1, 1/2, 1/4... that raises the objective enough (Armijo):
    a full Newton step can overshoot while the strengths are far from the optimum. Most
    rounds take the full step, so only those that fail it are tried again, at half."""
    length = np.ones(len(beta))
    start = _objective(beta, incidence, games, points)
    trying = np.arange(len(beta))
    for _ in range(_HALVINGS):
        t = length[trying, None]
        tried = beta[trying] + t * step[trying]
        gain = _objective(tried, incidence, games[trying], points[trying]) - start[trying]
        short = gain < 1e-4 * length[trying] * decrement[trying]
        trying = trying[short]
        if not len(trying):
            return length
        length[trying] /= 2
    # No length is enough only at the limits of rounding: stay.
    length[trying] = 0.0
    return length


def _sigmoid(x: Floats) -> Floats:
    """1 / (1 + e^-x) without overflow for any x."""
    result: Floats = 0.5 * (1.0 + np.tanh(0.5 * x))
    return result


def _intervals(tally: _Tally, rating: Floats, rounds: int, seed: int) -> tuple[Floats, Floats]:
    """The 2.5th and 97.5th percentiles of each model's rating over the bootstrap rounds;
    the rating itself where no round saw the model (or there are no rounds)."""
    if rounds == 0:
        return rating.copy(), rating.copy()
    flat = tally.counts.reshape(-1)
    battles = int(flat.sum())
    draws = np.random.default_rng(seed).multinomial(battles, flat / battles, size=rounds)
    counts = draws.astype(np.float64).reshape(rounds, -1, 3)
    played = counts.sum(axis=2) @ np.abs(_incidence(tally)) > 0
    ratings = _anchored(_ratings(tally, counts), played, rating)
    lower, upper = rating.copy(), rating.copy()
    for i in range(len(tally.models)):
        seen = ratings[played[:, i], i]
        if len(seen):
            lower[i], upper[i] = np.percentile(seen, [2.5, 97.5])
    return lower, upper


def _anchored(ratings: Floats, played: npt.NDArray[np.bool_], rating: Floats) -> Floats:
    """Each round's ratings shifted so that the models it saw average what the full data
    rate them. A round anchors on the mean of the models in it: had a model that sat a
    round out been rated far above the rest (one undefeated), every other rating would jump
    by its share of the mean in that round, and their intervals would widen for nothing.
    Where a round saw every model this shift is zero."""
    seen = played.sum(axis=1, keepdims=True)
    shift = ((rating[None] - ratings) * played).sum(axis=1, keepdims=True) / seen
    shifted: Floats = ratings + shift
    return shifted


def _standings(
    games: Sequence[Game], models: list[str], rating: Floats, lower: Floats, upper: Floats
) -> list[Standing]:
    """Each model's line, best first: its rating and interval, and its record counted from
    its own side of each game."""
    record = {model: {"win": 0, "loss": 0, "tie": 0, "bad": 0} for model in models}
    for game in games:
        if game.outcome in ("tie", "bad"):
            record[game.a][game.outcome] += 1
            record[game.b][game.outcome] += 1
        else:
            winner, loser = (game.a, game.b) if game.outcome == "a" else (game.b, game.a)
            record[winner]["win"] += 1
            record[loser]["loss"] += 1
    standings = [
        Standing(
            model=model,
            rating=float(rating[i]),
            lower=float(lower[i]),
            upper=float(upper[i]),
            games=sum(record[model].values()),
            wins=record[model]["win"],
            losses=record[model]["loss"],
            ties=record[model]["tie"] + record[model]["bad"],
            both_bad=record[model]["bad"],
        )
        for i, model in enumerate(models)
    ]
    return sorted(standings, key=lambda s: (-s.rating, s.model))


def _matrix(games: Sequence[Game], order: list[str]) -> dict[str, dict[str, float]]:
    """matrix[x][y]: x's share of the points in its games against y, in the standings'
    order; only pairs that met."""
    points: dict[tuple[str, str], float] = {}
    met: dict[tuple[str, str], int] = {}
    for game in games:
        share = POINTS_OF_A[game.outcome]
        for x, y, p in ((game.a, game.b, share), (game.b, game.a, 1.0 - share)):
            points[x, y] = points.get((x, y), 0.0) + p
            met[x, y] = met.get((x, y), 0) + 1
    return {
        x: {y: points[x, y] / met[x, y] for y in order if (x, y) in met}
        for x in order
        if any((x, y) in met for y in order)
    }
