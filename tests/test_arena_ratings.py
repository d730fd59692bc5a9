"""The arena's ratings against computations that share none of their code: a direct
maximum-likelihood fit by scipy, Hunter's MM algorithm, the closed form for two models; on
synthetic battles drawn from known strengths, where the estimates must close in on the
truth and the 95% intervals must cover it about 95% of the time."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import numpy.typing as npt
import pytest

from scheda.arena.ratings import (
    ELO_PER_UNIT,
    INIT,
    PRIOR_PRECISION,
    Game,
    Leaderboard,
    fit,
    leaderboard,
)

Floats = npt.NDArray[np.float64]

# True strengths on the Elo scale, spread as a real arena's (a few hundred points).
TRUE = np.array([-150.0, -50.0, 0.0, 80.0, 200.0])
NAMES = [f"m{i}" for i in range(len(TRUE))]


def battles(
    true: Floats, count: int, rng: np.random.Generator, tie_rate: float = 0.2
) -> list[Game]:
    """Battles between random pairs, in random columns, from the Bradley-Terry model with
    ties: a tie (or both bad) at `tie_rate`, and the wins drawn so that each side's expected
    points are still the model's probability p; a tie counted as half a win then estimates
    the true strengths. (Needs tie_rate / 2 <= p <= 1 - tie_rate / 2 for every pair.)"""
    games = []
    for _ in range(count):
        i, j = rng.choice(len(true), size=2, replace=False)
        p = 1.0 / (1.0 + 10.0 ** ((true[j] - true[i]) / 400.0))
        win = (p - tie_rate / 2) / (1.0 - tie_rate)
        u = rng.random()
        if u < tie_rate:
            outcome = "tie" if u < tie_rate / 2 else "bad"
        else:
            outcome = "a" if rng.random() < win else "b"
        games.append(Game(f"m{i}", f"m{j}", outcome))
    return games


def differences(ratings: dict[str, float]) -> Floats:
    """Each model's rating minus the first's, in NAMES order (what the data determine)."""
    values = np.array([ratings[name] for name in NAMES if name in ratings])
    result: Floats = values - values[0]
    return result


def points_of_a(outcome: str) -> float:
    return {"a": 1.0, "b": 0.0, "tie": 0.5, "bad": 0.5}[outcome]


def scipy_fit(games: list[Game]) -> dict[str, float]:
    """The same objective written game by game and maximised by scipy's BFGS: the
    log-likelihood with ties half a win each, plus the documented Gaussian prior."""
    from scipy.optimize import minimize

    index = {name: k for k, name in enumerate(NAMES)}
    a = np.array([index[g.a] for g in games])
    b = np.array([index[g.b] for g in games])
    s = np.array([points_of_a(g.outcome) for g in games])

    def loss(beta: Floats) -> tuple[float, Floats]:
        d = beta[a] - beta[b]
        nll = np.sum(s * np.logaddexp(0, -d) + (1 - s) * np.logaddexp(0, d))
        nll += 0.5 * PRIOR_PRECISION * beta @ beta
        residual = s - 1.0 / (1.0 + np.exp(-d))
        grad = -np.bincount(a, residual, len(NAMES)) + np.bincount(b, residual, len(NAMES))
        return float(nll), grad + PRIOR_PRECISION * beta

    found = minimize(loss, np.zeros(len(NAMES)), jac=True, method="BFGS", options={"gtol": 1e-9})
    return {name: INIT + ELO_PER_UNIT * float(x) for name, x in zip(NAMES, found.x, strict=True)}


def mm_fit(games: list[Game]) -> dict[str, float]:
    """Hunter (2004), section 2, for the unpenalised Bradley-Terry model: with W_i the points
    of model i and n_ij the games of i and j, gamma_i <- W_i / sum_j n_ij / (gamma_i +
    gamma_j), which raises the likelihood at every step and converges to the maximum when
    every split of the models has a side that scored against the other."""
    index = {name: k for k, name in enumerate(NAMES)}
    n = np.zeros((len(NAMES), len(NAMES)))
    wins = np.zeros(len(NAMES))
    for g in games:
        i, j = index[g.a], index[g.b]
        n[i, j] += 1
        n[j, i] += 1
        wins[i] += points_of_a(g.outcome)
        wins[j] += 1 - points_of_a(g.outcome)
    gamma = np.ones(len(NAMES))
    for _ in range(100_000):
        new = wins / (n / (gamma[:, None] + gamma[None, :])).sum(axis=1)
        new /= np.exp(np.log(new).mean())
        done = np.max(np.abs(np.log(new / gamma))) < 1e-13
        gamma = new
        if done:
            break
    return {name: INIT + ELO_PER_UNIT * math.log(g) for name, g in zip(NAMES, gamma, strict=True)}


def test_the_fit_is_scipys_maximum_of_the_same_likelihood() -> None:
    for seed in range(3):
        games = battles(TRUE, 400, np.random.default_rng(seed))
        ours, theirs = differences(fit(games)), differences(scipy_fit(games))
        assert np.max(np.abs(ours - theirs)) < 0.01, (seed, ours, theirs)


def test_the_fit_is_hunters_mm_on_data_that_separate_no_model() -> None:
    # Unpenalised, the MM answer is the plain maximum-likelihood estimate: it differs from
    # ours only by what the very weak prior moves, far less than a point.
    for seed in range(3):
        games = battles(TRUE, 500, np.random.default_rng(10 + seed))
        ours, theirs = differences(fit(games)), differences(mm_fit(games))
        assert np.max(np.abs(ours - theirs)) < 0.01, (seed, ours, theirs)


def test_two_models_take_the_closed_form() -> None:
    # x and y: x wins twice (once in each column), loses once, one tie, one both bad: x has
    # 3 points of 5, and the maximum likelihood makes sigmoid(difference) that share.
    games = [
        Game("x", "y", "a"),
        Game("y", "x", "b"),
        Game("x", "y", "b"),
        Game("y", "x", "tie"),
        Game("x", "y", "bad"),
    ]
    ratings = fit(games)
    assert ratings["x"] - ratings["y"] == pytest.approx(
        ELO_PER_UNIT * math.log(0.6 / 0.4), abs=1e-3
    )
    assert (ratings["x"] + ratings["y"]) / 2 == pytest.approx(INIT)


def test_the_estimates_close_in_on_the_true_strengths() -> None:
    truth = TRUE - TRUE.mean()
    errors = []
    for count in (100, 1_000, 10_000):
        rng = np.random.default_rng(count)
        games = battles(TRUE, count, rng)
        ratings = fit(games)
        estimate = np.array([ratings[name] for name in NAMES]) - INIT
        errors.append(float(np.sqrt(np.mean((estimate - truth) ** 2))))
    # The standard error falls as 1/sqrt(battles): some 60, 15, 6 points here.
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 15, errors


def test_the_intervals_cover_the_truth_at_about_their_nominal_rate() -> None:
    """100 arenas of 300 battles, 300 bootstrap rounds each: each model's interval is for its
    rating above the mean of all (the anchor), whose true value is its true strength above
    the true mean. Of the 500 intervals about 95% must cover it. Why 88% to 99%: with 500
    independent intervals at 95% the count's standard deviation is 1 point, and the five of
    one arena are not independent (they share its battles and sum to zero), which widens it
    to some 1.5; a percentile bootstrap also covers a little less than its nominal rate on a
    few hundred battles. A rate outside the band means wrong intervals, not bad luck: 67%
    if they were half as wide, 99.99% if twice."""
    truth = TRUE - TRUE.mean()
    covered = total = 0
    rng = np.random.default_rng(2024)
    for arena in range(100):
        board = leaderboard(battles(TRUE, 300, rng), rounds=300, seed=arena)
        for standing in board.standings:
            true = INIT + truth[NAMES.index(standing.model)]
            covered += standing.lower <= true <= standing.upper
            total += 1
    assert total == 500
    assert 0.88 <= covered / total <= 0.99, covered / total


def test_ties_count_half() -> None:
    games = [Game("x", "y", "tie"), Game("y", "x", "bad"), Game("x", "y", "tie")]
    board = leaderboard(games, rounds=50)
    assert [s.rating for s in board.standings] == pytest.approx([INIT, INIT])
    assert board.matrix == {"x": {"y": 0.5}, "y": {"x": 0.5}}
    x = next(s for s in board.standings if s.model == "x")
    assert (x.games, x.wins, x.losses, x.ties, x.both_bad) == (3, 0, 0, 3, 1)
    # Both bad rates as a tie does.
    as_ties = [Game(g.a, g.b, "tie") for g in games]
    assert fit(as_ties) == pytest.approx(fit(games))


def test_the_record_and_matrix_count_each_side() -> None:
    games = [
        Game("x", "y", "a"),
        Game("y", "x", "a"),
        Game("x", "z", "a"),
        Game("z", "x", "bad"),
        Game("y", "z", "tie"),
    ]
    board = leaderboard(games, rounds=20)
    record = {s.model: (s.games, s.wins, s.losses, s.ties, s.both_bad) for s in board.standings}
    assert record == {"x": (4, 2, 1, 1, 1), "y": (3, 1, 1, 1, 0), "z": (3, 0, 1, 2, 1)}
    assert board.matrix["x"] == {"y": 0.5, "z": 0.75}
    assert board.matrix["z"] == {"x": 0.25, "y": 0.5}
    assert board.battles == 5
    assert board.standings[0].model == "x"
    assert list(board.matrix) == [s.model for s in board.standings]


def test_an_undefeated_model_has_a_large_finite_rating() -> None:
    """Three wins of x over y: without the prior the likelihood grows for ever with the
    gap. With it, strengths b and -b maximise 3 log sigmoid(2b) - prior * b^2, where
    3 sigmoid(-2b) = prior * b; brentq finds that b on its own."""
    from scipy.optimize import brentq

    ratings = fit([Game("x", "y", "a"), Game("y", "x", "b"), Game("x", "y", "a")])
    half = brentq(lambda b: 3 / (1 + math.exp(2 * b)) - PRIOR_PRECISION * b, 0.0, 100.0)
    assert math.isfinite(ratings["x"]) and math.isfinite(ratings["y"])
    assert ratings["x"] - ratings["y"] == pytest.approx(2 * half * ELO_PER_UNIT, abs=0.01)
    assert ratings["x"] - ratings["y"] > 1500
    # Among others too: z beats everyone, the rest split their games.
    games = battles(TRUE[:3], 200, np.random.default_rng(5))
    games += [Game("z", NAMES[k % 3], "a") for k in range(6)]
    board = leaderboard(games, rounds=100)
    assert board.standings[0].model == "z"
    assert all(math.isfinite(v) for s in board.standings for v in (s.rating, s.lower, s.upper))


def test_the_intervals_hold_the_rating_and_repeat_with_the_seed() -> None:
    games = battles(TRUE, 300, np.random.default_rng(7))
    board = leaderboard(games, rounds=200, seed=3)
    assert all(s.lower < s.rating < s.upper for s in board.standings)
    assert leaderboard(games, rounds=200, seed=3) == board
    assert leaderboard(games, rounds=200, seed=4) != board
    assert [s.rating for s in board.standings] == sorted(fit(games).values(), reverse=True)
    # No rounds: no interval beyond the rating itself.
    assert all(s.lower == s.rating == s.upper for s in leaderboard(games, rounds=0).standings)


def test_a_model_missing_from_a_resample_changes_no_one_elses_interval() -> None:
    """w played once, in 61 battles: a third of the resamples hold none of its games, and
    there the prior alone puts it at the mean, 1000. Counted, those would pull the lower end
    of its interval down to 1000; left out, every resample that has w has it undefeated,
    far up. And the others: a resample without w anchors on x and y alone, so it is
    shifted to give them the mean the full data give them; unshifted, they would jump by
    w's share of the mean there (a third of some 2000 points) and x's interval would be
    some eight times as wide as without w."""
    duel = [Game("x", "y", "a" if k % 3 else "b") for k in range(60)]
    board = leaderboard([*duel, Game("w", "x", "a")], rounds=300)
    alone = leaderboard(duel, rounds=300)

    def width(board: Leaderboard, model: str) -> float:
        standing = next(s for s in board.standings if s.model == model)
        return standing.upper - standing.lower

    assert board.standings[0].model == "w"
    assert board.standings[0].lower > INIT + 1000
    assert width(board, "x") < 1.5 * width(alone, "x")
    assert width(board, "y") < 1.5 * width(alone, "y")


def test_the_dict_is_json() -> None:
    board = leaderboard(battles(TRUE, 100, np.random.default_rng(1)), rounds=20)
    data = json.loads(json.dumps(board.as_dict(), allow_nan=False))
    assert set(data) == {"standings", "matrix", "battles", "rounds"}
    assert data["battles"] == 100 and data["rounds"] == 20
    assert data["standings"][0] == {
        "model": board.standings[0].model,
        "rating": board.standings[0].rating,
        "lower": board.standings[0].lower,
        "upper": board.standings[0].upper,
        "games": board.standings[0].games,
        "wins": board.standings[0].wins,
        "losses": board.standings[0].losses,
        "ties": board.standings[0].ties,
        "both_bad": board.standings[0].both_bad,
    }
    assert data["matrix"] == board.matrix


def test_edges() -> None:
    assert fit([]) == {}
    empty = leaderboard([])
    assert (empty.standings, empty.matrix, empty.battles) == ([], {}, 0)
    with pytest.raises(ValueError, match="against itself"):
        fit([Game("x", "y", "a"), Game("x", "x", "tie")])
    with pytest.raises(ValueError, match="unknown outcome 'draw'"):
        leaderboard([Game("x", "y", "draw")])
    with pytest.raises(ValueError, match="rounds"):
        leaderboard([Game("x", "y", "a")], rounds=-1)
    # One battle, one pair: still a leaderboard, and only of the two that played.
    board = leaderboard([Game("x", "y", "b")], rounds=10)
    assert [s.model for s in board.standings] == ["y", "x"]


def test_a_thousand_rounds_on_a_thousand_battles_take_well_under_a_second() -> None:
    true = np.array([-200.0, -100.0, 0.0, 50.0, 100.0, 150.0])
    games = battles(true, 1_000, np.random.default_rng(0), tie_rate=0.1)
    start = time.perf_counter()
    leaderboard(games, rounds=1_000)
    # Some 0.15 s on a 2-core machine; a loop over rounds in Python would take seconds.
    assert time.perf_counter() - start < 1.0
