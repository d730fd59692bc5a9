"""The arena's leaderboard with what else is known of each model: its KLD, its accuracy.

The ratings are `ratings.leaderboard` over the voted battles (a tag's, if one
is given). Beside each model, where this machine has stored them: the mean KL
divergence from the newest `scheda compare` in which its file was a candidate
(how far its distributions are from the reference's), and the headline figure of
its newest finished run of each `scheda eval` task. Both are matched by the
model's file, as the battles recorded it, not by its name: two names of one file
are one file's figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scheda.stores.arena import ArenaStore
from scheda.stores.comparisons import ComparisonStore
from scheda.stores.evals import EvalStore

ROUNDS = 1000


def _same(path: str) -> str:
    try:
        return str(Path(path).resolve())
    except OSError:
        return path


def model_paths(arena: ArenaStore, tag: str | None) -> dict[str, str]:
    """Each rated model's file, as its newest battle recorded it."""
    paths: dict[str, str] = {}
    for battle in arena.battles(tag, voted=True):  # newest first: the first seen wins
        for side in (battle.a, battle.b):
            paths.setdefault(side.model, side.path)
    return paths


def kld_of(comparisons: list[dict[str, Any]], path: str) -> dict[str, Any] | None:
    """The mean KLD of the newest comparison with this file as a candidate, and where from."""
    here = _same(path)
    for record in comparisons:  # newest first
        for row in record.get("rows", []):
            if row.get("role") == "candidate" and _same(row.get("path", "")) == here:
                kld = row.get("kld") or {}
                if "mean" in kld:
                    return {
                        "mean": kld["mean"],
                        "uncertainty": kld.get("uncertainty"),
                        "comparison": record.get("id"),
                        "reference": record.get("reference"),
                    }
    return None


def accuracy_of(evals: EvalStore, path: str) -> dict[str, Any]:
    """{task: its headline figure} from the newest finished run of each task on this file."""
    here = _same(path)
    found: dict[str, Any] = {}
    for run in evals.runs():  # newest first
        if run.finished is None or not run.summary or run.task in found:
            continue
        if _same(run.path) != here:
            continue
        metrics = run.summary.get("metrics") or {}
        if metrics:
            metric, figure = next(iter(metrics.items()))
            found[run.task] = {
                "metric": metric,
                "value": figure.get("value"),
                "items": run.summary.get("items"),
                "run": run.id,
            }
    return found


def standings(
    arena: ArenaStore,
    tag: str | None = None,
    rounds: int = ROUNDS,
    evals: EvalStore | None = None,
    comparisons: ComparisonStore | None = None,
) -> dict[str, Any]:
    """The leaderboard (`Leaderboard.as_dict()`), each model with its file, KLD and accuracy."""
    from scheda.arena.ratings import Game, leaderboard

    tag = (tag or "").strip() or None
    games = [Game(a, b, outcome) for a, b, outcome in arena.games(tag)]
    board = leaderboard(games, rounds=rounds).as_dict()
    paths = model_paths(arena, tag)
    records = comparisons.list() if comparisons is not None else []
    for row in board["standings"]:
        path = paths.get(row["model"])
        row["path"] = path
        row["kld"] = kld_of(records, path) if path else None
        row["accuracy"] = accuracy_of(evals, path) if path and evals is not None else {}
    board["tag"] = tag
    board["tags"] = arena.tags()
    return board
