"""How a generated answer is matched to the gold ones: SQuAD's, DROP's and QuAC's official metrics.

- SQuAD v1.1 (its official `evaluate-v1.1.py`): both answers normalised
  (lower case, punctuation dropped, the articles a/an/the dropped, runs of
  whitespace made one space); exact match, and the F1 of the two bags of
  words; each the best over the gold answers.
- DROP (its official `drop_eval.py`, as lm-evaluation-harness's
  `drop/utils.py` carries it): an answer is a bag of spans; each span is
  split on spaces and hyphens, numbers are read as floats ("12", "12.0" and
  "1.2e1" are one number), punctuation goes except inside a number, articles
  go. Exact match compares the sets of normalised spans; F1 pairs the
  predicted spans with the gold ones one to one, the pairing that scores most
  (a bipartite matching), and averages over the larger bag. A pair whose gold
  span holds numbers scores 0 unless the prediction holds one of them. F1 is
  rounded to two places, as the official script does.
- QuAC (its official `scorer.py`): SQuAD's normalisation and word F1, the
  best over the references, after its `handle_cannot`: when at least half of
  the references say "CANNOTANSWER" the answer is that, else those
  references are dropped. A "CANNOTANSWER" reference is matched only by that
  exact answer.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

# -- SQuAD v1.1 ---------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's `normalize_answer`: lower, punctuation out, articles out, one space."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """The F1 of the two answers' normalised words, counted with repeats (SQuAD's `f1_score`)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_scores(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """(exact match, F1), each the best over the gold answers (`metric_max_over_ground_truths`)."""
    if not golds:
        return 0.0, 0.0
    return (
        max(squad_exact_match(prediction, gold) for gold in golds),
        max(squad_f1(prediction, gold) for gold in golds),
    )


# -- QuAC ---------------------------------------------------------------------------------------

CANNOTANSWER = "CANNOTANSWER"


def handle_cannot(references: Sequence[str]) -> list[str]:
    """QuAC's `handle_cannot`: "CANNOTANSWER" alone when at least half the references say it,
    else the references that give a span."""
    cannot = sum(reference == CANNOTANSWER for reference in references)
    if cannot >= len(references) - cannot:
        return [CANNOTANSWER]
    return [reference for reference in references if reference != CANNOTANSWER]


def quac_f1(prediction: str, references: Sequence[str]) -> float:
    """The best F1 over the references, as QuAC's `compute_span_overlap` scores each one."""
    prediction = prediction.strip()

    def one(reference: str) -> float:
        if reference == CANNOTANSWER:
            return float(prediction == CANNOTANSWER)
        return squad_f1(prediction, reference)

    return max((one(reference) for reference in handle_cannot(references)), default=0.0)


# -- DROP ---------------------------------------------------------------------------------------

DropAnswer = tuple[str, ...]  # one gold answer: its spans (one for a number or a date)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _drop_token(token: str) -> str:
    """One token as DROP normalises it: lower, punctuation out unless it is a number, the
    number written as a float, articles out, whitespace collapsed."""
    token = token.lower()
    if not _is_number(token):
        token = "".join(ch for ch in token if ch not in _PUNCTUATION)
    if _is_number(token):
        token = str(float(token))
    return " ".join(_ARTICLES.sub(" ", token).split())


def drop_normalize(span: str) -> str:
    """DROP's `_normalize`: the span split on spaces and hyphens, each token normalised."""
    tokens = (_drop_token(token) for token in re.split(" |-", span))
    return " ".join(token for token in tokens if token.strip()).strip()


def _bags(answer: str | Sequence[str]) -> tuple[list[str], list[set[str]]]:
    """DROP's `_answer_to_bags`: the normalised spans, and each one's set of words."""
    spans = [answer] if isinstance(answer, str) else list(answer)
    normalized = [drop_normalize(span) for span in spans]
    return normalized, [set(span.split()) for span in normalized]


def _bag_f1(predicted: set[str], gold: set[str]) -> float:
    """DROP's `_compute_f1` of two bags of words (an empty bag has precision or recall 1)."""
    common = len(gold & predicted)
    precision = common / len(predicted) if predicted else 1.0
    recall = common / len(gold) if gold else 1.0
    if precision == 0.0 and recall == 0.0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _numbers_agree(gold: set[str], predicted: set[str]) -> bool:
    """DROP's `_match_numbers_if_present`: a gold bag with numbers needs one of them predicted."""
    gold_numbers = {word for word in gold if _is_number(word)}
    return not gold_numbers or bool(gold_numbers & {w for w in predicted if _is_number(w)})


def best_pairing(scores: list[list[float]]) -> float:
    """The largest total of a one-to-one pairing of rows with columns: what the official
    script's optimal assignment (`scipy.optimize.linear_sum_assignment`) adds up to, found
    exactly by dynamic programming over the subsets of the shorter side (an answer has a few
    spans, so the subsets are few)."""
    if scores and len(scores[0]) > len(scores):
        scores = [list(column) for column in zip(*scores, strict=True)]
    best = {0: 0.0}  # the columns used so far (a bit mask) -> the best total with them
    for row in scores:
        grown = dict(best)  # this row left unpaired
        for used, total in best.items():
            for column, value in enumerate(row):
                if not used & 1 << column:
                    key = used | 1 << column
                    grown[key] = max(grown.get(key, 0.0), total + value)
        best = grown
    return max(best.values())


def drop_metrics(predicted: str | Sequence[str], gold: str | Sequence[str]) -> tuple[float, float]:
    """DROP's `get_metrics`: (exact match, F1) of a predicted answer against one gold answer,
    each a span or a list of spans."""
    predicted_spans, predicted_bags = _bags(predicted)
    gold_spans, gold_bags = _bags(gold)
    exact = set(predicted_spans) == set(gold_spans) and len(predicted_spans) == len(gold_spans)
    scores = [
        [_bag_f1(p, g) if _numbers_agree(g, p) else 0.0 for p in predicted_bags] for g in gold_bags
    ]
    # The official script averages each gold span's paired score over the larger bag.
    f1 = best_pairing(scores) / max(len(gold_bags), len(predicted_bags))
    return float(exact), round(f1, 2)


def drop_scores(prediction: str, golds: Iterable[DropAnswer]) -> tuple[float, float]:
    """lm-eval's `process_results` for `drop`: the generated text as one span, scored against
    each gold answer; the best exact match and F1 (a gold answer that is empty is skipped)."""
    best_exact, best_f1 = 0.0, 0.0
    for gold in golds:
        if not gold or not gold[0].strip():
            continue
        exact, f1 = drop_metrics([prediction], list(gold))
        best_exact, best_f1 = max(best_exact, exact), max(best_f1, f1)
    return best_exact, best_f1
