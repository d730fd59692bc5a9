"""The generated-answer tasks: SQuAD, DROP, QuAC and MATH.

Their metrics on the worked examples the official scripts and papers publish,
their prompts string for string against lm-evaluation-harness's own code,
their data read from the original files and from a loopback Hub, bad files
as one line, and one tiny run of each on the real embedded model.

The records below are real rows of the datasets, copied from where they are
printed; each says where. Their answer offsets were checked against their
passages when they were copied (the tests check them again).
"""

from __future__ import annotations

import ast
import importlib
import io
import itertools
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from scheda.errors import UsageError
from scheda.evaluation import drop, hendrycks_math, quac, squad
from scheda.evaluation.answer_match import (
    CANNOTANSWER,
    drop_metrics,
    drop_normalize,
    drop_scores,
    handle_cannot,
    normalize_answer,
    quac_f1,
    squad_exact_match,
    squad_f1,
    squad_scores,
)
from scheda.evaluation.base import EvalModel, ItemResult
from scheda.evaluation.generated import GeneratedTask
from scheda.evaluation.runner import make_task, run_task
from scheda.stores.evals import EvalStore
from tests.needs import SHARED_DATA, require

if TYPE_CHECKING:
    from tests.hub import Hub

# lm-eval ships no type information: its modules are imported by name, as Any.
LM_EVAL_TASKS = Path(str(importlib.import_module("lm_eval").__file__)).parent / "tasks"
AGIEVAL_MATH = SHARED_DATA / "agieval" / "math.jsonl"

# -- the records --------------------------------------------------------------------------------

# SQuAD v1.1, as `rajpurkar/squad` serves it: train row 0 and validation rows 0 and 2, printed
# in the Hugging Face NLP course, chapter 7 ("Question answering").
NOTRE_DAME = (
    "Architecturally, the school has a Catholic character. Atop the Main Building's gold dome is "
    "a golden statue of the Virgin Mary. Immediately in front of the Main Building and facing "
    'it, is a copper statue of Christ with arms upraised with the legend "Venite Ad Me Omnes". '
    "Next to the Main Building is the Basilica of the Sacred Heart. Immediately behind the "
    "basilica is the Grotto, a Marian place of prayer and reflection. It is a replica of the "
    "grotto at Lourdes, France where the Virgin Mary reputedly appeared to Saint Bernadette "
    "Soubirous in 1858. At the end of the main drive (and in a direct line that connects through "
    "3 statues and the Gold Dome), is a simple, modern stone statue of Mary."
)
SUPER_BOWL = (
    "Super Bowl 50 was an American football game to determine the champion of the National "
    "Football League (NFL) for the 2015 season. The American Football Conference (AFC) champion "
    "Denver Broncos defeated the National Football Conference (NFC) champion Carolina Panthers "
    "24\u201310 to earn their third Super Bowl title. The game was played on February 7, 2016, at "
    "Levi's Stadium in the San Francisco Bay Area at Santa Clara, California. As this was the "
    '50th Super Bowl, the league emphasized the "golden anniversary" with various gold-themed '
    "initiatives, as well as temporarily suspending the tradition of naming each Super Bowl game "
    'with Roman numerals (under which the game would have been known as "Super Bowl L"), so that '
    "the logo could prominently feature the Arabic numerals 50."
)
SQUAD_TRAIN: list[dict[str, Any]] = [
    {
        "id": "5733be284776f41900661182",
        "title": "University_of_Notre_Dame",
        "context": NOTRE_DAME,
        "question": "To whom did the Virgin Mary allegedly appear in 1858 in Lourdes France?",
        "answers": {"text": ["Saint Bernadette Soubirous"], "answer_start": [515]},
    }
]
SQUAD_VALIDATION: list[dict[str, Any]] = [
    {
        "id": "56be4db0acb8001400a502ec",
        "title": "Super_Bowl_50",
        "context": SUPER_BOWL,
        "question": "Which NFL team represented the AFC at Super Bowl 50?",
        "answers": {"text": ["Denver Broncos"] * 3, "answer_start": [177] * 3},
    },
    {
        "id": "56be4db0acb8001400a502ee",
        "title": "Super_Bowl_50",
        "context": SUPER_BOWL,
        "question": "Where did Super Bowl 50 take place?",
        "answers": {
            "text": [
                "Santa Clara, California",
                "Levi's Stadium",
                "Levi's Stadium in the San Francisco Bay Area at Santa Clara, California.",
            ],
            "answer_start": [403, 355, 355],
        },
    },
]

# DROP, as the original drop_dataset_*.json write a section. The validation question is
# nfl_1184's first (`ucinlp/drop` validation row 0; its two validated answers disagree). The
# train questions are the first three of the shots OLMES draws from DROP's train split
# (allenai/olmes, oe_eval/tasks/fewshot_sources.py, "OLMES:drop"): a number, a span, a date.
NO_DATE = {"day": "", "month": "", "year": ""}


def drop_answer(number: str = "", spans: tuple[str, ...] = (), **date: str) -> dict[str, Any]:
    return {"number": number, "date": {**NO_DATE, **date}, "spans": list(spans)}


RAIDERS = (
    " Hoping to rebound from their loss to the Patriots, the Raiders stayed at home for a Week 16 "
    "duel with the Houston Texans.  Oakland would get the early lead in the first quarter as "
    "quarterback JaMarcus Russell completed a 20-yard touchdown pass to rookie wide receiver Chaz "
    "Schilens.  The Texans would respond with fullback Vonta Leach getting a 1-yard touchdown "
    "run, yet the Raiders would answer with kicker Sebastian Janikowski getting a 33-yard and a "
    "30-yard field goal.  Houston would tie the game in the second quarter with kicker Kris "
    "Brown getting a 53-yard and a 24-yard field goal. Oakland would take the lead in the third "
    "quarter with wide receiver Johnnie Lee Higgins catching a 29-yard touchdown pass from "
    "Russell, followed up by an 80-yard punt return for a touchdown.  The Texans tried to rally "
    "in the fourth quarter as Brown nailed a 40-yard field goal, yet the Raiders' defense would "
    "shut down any possible attempt."
)
DROP_DEV: dict[str, Any] = {
    "nfl_1184": {
        "passage": RAIDERS,
        "qa_pairs": [
            {
                "question": "Who scored the first touchdown of the game?",
                "answer": drop_answer(spans=("Chaz Schilens",)),
                "query_id": "f37e81fa-ef7b-4583-b671-762fc433faa9",
                "validated_answers": [
                    drop_answer(spans=("Chaz Schilens",)),
                    drop_answer(spans=("JaMarcus Russell",)),
                ],
            }
        ],
    }
}
LIONS = (
    "To start the season, the Lions traveled south to Tampa, Florida to take on the Tampa Bay "
    "Buccaneers. The Lions scored first in the first quarter with a 23-yard field goal by Jason "
    "Hanson. The Buccaneers tied it up with a 38-yard field goal by Connor Barth, then took the "
    "lead when Aqib Talib intercepted a pass from Matthew Stafford and ran it in 28 yards. The "
    "Lions responded with a 28-yard field goal. In the second quarter, Detroit took the lead "
    "with a 36-yard touchdown catch by Calvin Johnson, and later added more points when Tony "
    "Scheffler caught an 11-yard TD pass. Tampa Bay responded with a 31-yard field goal just "
    "before halftime. The second half was relatively quiet, with each team only scoring one "
    "touchdown. First, Detroit's Calvin Johnson caught a 1-yard pass in the third quarter. The "
    "game's final points came when Mike Williams of Tampa Bay caught a 5-yard pass.  The Lions "
    "won their regular season opener for the first time since 2007"
)
CHIEFS = (
    "Coming off their road win over the Redskins, the Chiefs went home, donned their Dallas "
    "Texans throwbacks, and played a Week 7 AFL Legacy game with the San Diego Chargers. Kansas "
    "City would find themselves trailing in the first quarter as Chargers quarterback Philip "
    "Rivers completed a 3-yard touchdown pass to wide receiver Malcom Floyd, followed by a "
    "10-yard touchdown pass to wide receiver Vincent Jackson. San Diego would add onto their "
    "lead in the second quarter with a 20-yard and a 39-yard field goal from kicker Nate "
    "Kaeding. The Chiefs would get onto the board in the third quarter with quarterback Matt "
    "Cassel completing a 7-yard touchdown pass to wide receiver Dwayne Bowe, but the Chargers "
    "kept their momentum going with Rivers finding running back Darren Sproles on a 58-yard "
    "touchdown pass. In the fourth quarter, San Diego sealed the win with Kaeding's 19-yard "
    "field goal and fullback Jacob Hester recovering a blocked punt in the end zone for a "
    "touchdown. With the loss, Kansas City went into their bye week at 1-6. Larry Johnson was "
    "suspended for two weeks after he made offensive comments about Todd Haley and made "
    "offensive comments about homosexuals on Twitter and in public."
)
MOMCHIL = (
    "In 1344, Momchil, the independent Bulgarian ruler of the Rhodope and Aegean regions, whose "
    "army grew to 2,000 men, took an important role in the Byzantine civil war. While at first "
    "he supported John Kantakouzenos, from the spring of 1344 Momchil reneged, provoked by the "
    "aggression of the Ottoman allies. In June he defeated the Ottoman fleet near the Portogalos "
    "bay. According to sources, at night the Bulgarian ruler sent boats to burn the anchored "
    "Ottoman ships and soon after he defeated the army of Kantakouzenos at Mosynopolis. Probably "
    "the first local ruler to become aware of the impending Ottoman threat, Momchil "
    "unsuccessfully pleaded with the emperors of Bulgaria and Byzantium for help. Even though "
    "his troops continued the resistance in the Eastern Rhodopes, in May 1345 the Turks led by "
    "Umur Beg marched from Asia Minor and devastated Bulgarian territories driving away people "
    "and livestock. Soon after, on 7 July 1345, Ottoman forces under Umur Beg defeated "
    "Momchil's army in the battle of Peritor near his capital Xanthi. Sources attest that the "
    "independent ruler perished in the battle without leaving asuccessor, and with little "
    "political will or leadership left to counter the Ottoman invasion."
)
DROP_TRAIN: dict[str, Any] = {
    "nfl_2201": {
        "passage": LIONS,
        "qa_pairs": [
            {
                "question": "How many field goals did the Lions score?",
                "answer": drop_answer(number="2"),
                "query_id": "c9582e03-b01b-42ed-83e0-b90a5334aefa",
            }
        ],
    },
    "nfl_1491": {
        "passage": CHIEFS,
        "qa_pairs": [
            {
                "question": "which player scored the longest field goal?",
                "answer": drop_answer(spans=("Nate Kaeding",)),
                "query_id": "a849cb71-b6da-4c1a-9791-b962c9ff2d65",
            }
        ],
    },
    "history_269": {
        "passage": MOMCHIL,
        "qa_pairs": [
            {
                "question": "When did Momchil defeat the Ottoman fleet near the Portogalos bay?",
                "answer": drop_answer(month="June", year="1344"),
                "query_id": "3637ce9d-203d-49e0-a454-b8a49e376148",
            }
        ],
    },
}

# QuAC. The validation dialogue the dataset card of `allenai/quac` prints (the Hub's schema:
# one row a dialogue, its turns as parallel lists)...
SATCHEL_CONTEXT = (
    "A former friend from the Mobile slums, Alex Herman, was the player/manager for the "
    "Chattanooga White Sox of the minor Negro Southern League. In 1926 he discovered Paige and "
    "offered to pay him $250 per month, of which Paige would collect $50 with the rest going to "
    "his mother. He also agreed to pay Lula Paige a $200 advance, and she agreed to the "
    "contract. The local newspapers--the Chattanooga News and Chattanooga Times--recognized "
    "from the beginning that Paige was special. In April 1926, shortly after his arrival, he "
    "recorded nine strikeouts over six innings against the Atlanta Black Crackers. Part way "
    "through the 1927 season, Paige's contract was sold to the Birmingham Black Barons of the "
    "major Negro National League (NNL). According to Paige's first memoir, his contract was for "
    "$450 per month, but in his second he said it was for $275. Pitching for the Black Barons, "
    "Paige threw hard but was wild and awkward. In his first big game in late June 1927, "
    "against the St. Louis Stars, Paige incited a brawl when his fastball hit the hand of St. "
    "Louis catcher Mitchell Murray. Murray then charged the mound and Paige raced for the "
    "dugout, but Murray flung his bat and struck Paige above the hip. The police were summoned, "
    'and the headline of the Birmingham Reporter proclaimed a "Near Riot." Paige improved and '
    "matured as a pitcher with help from his teammates, Sam Streeter and Harry Salmon, and his "
    "manager, Bill Gatewood. He finished the 1927 season 7-1 with 69 strikeouts and 26 walks in "
    "89 1/3 innings. Over the next two seasons, Paige went 12-5 and 10-9 while recording 176 "
    "strikeouts in 1929. (Several sources credit his 1929 strikeout total as the all-time "
    "single-season record for the Negro leagues, though there is variation among the sources "
    "about the exact number of strikeouts.) On April 29 of that season he recorded 17 "
    "strikeouts in a game against the Cuban Stars, which exceeded what was then the major "
    "league record of 16 held by Noodles Hahn and Rube Waddell. Six days later he struck out 18 "
    "Nashville Elite Giants, a number that was tied in the white majors by Bob Feller in 1938. "
    'Due to his increased earning potential, Barons owner R. T. Jackson would "rent" Paige '
    "out to other ball clubs for a game or two to draw a decent crowd, with both Jackson and "
    "Paige taking a cut. CANNOTANSWER"
)
SATCHEL_ID = "C_6abd2040a75d47168a9e4cca9ca3fed5_0"
HERMAN = (
    "Alex Herman, was the player/manager for the Chattanooga White Sox of the minor Negro "
    "Southern League. In 1926 he discovered Paige"
)
TO_BIRMINGHAM = (
    "Part way through the 1927 season, Paige's contract was sold to the Birmingham Black Barons"
)
PITCHING = "Pitching for the Black Barons, Paige threw hard but was wild and awkward."
RENT = 'Jackson would "rent" Paige out to other ball clubs for a game or two to draw a decent crowd'
SATCHEL: dict[str, Any] = {
    "dialogue_id": SATCHEL_ID,
    "wikipedia_page_title": "Satchel Paige",
    "background": (
        'Leroy Robert "Satchel" Paige (July 7, 1906 - June 8, 1982) was an American Negro league '
        "baseball and Major League Baseball (MLB) pitcher who became a legend in his own "
        "lifetime by being known as perhaps the best pitcher in baseball history, by his "
        "longevity in the game, and by attracting record crowds wherever he pitched. Paige was "
        "a right-handed pitcher, and at age 42 in 1948, he was the oldest major league rookie "
        "while playing for the Cleveland Indians. He played with the St. Louis Browns until age "
        "47, and represented them in the All-Star Game in 1952 and 1953."
    ),
    "section_title": "Chattanooga and Birmingham: 1926-29",
    "context": SATCHEL_CONTEXT,
    "turn_ids": [f"{SATCHEL_ID}_q#{i}" for i in range(8)],
    "questions": [
        "what did he do in Chattanooga",
        "how did he discover him",
        "what position did he play",
        "how did they help him",
        "when did he go to Birmingham",
        "how did he feel about this",
        "how did he do with this team",
        "What made him leave the team",
    ],
    "followups": [0, 2, 0, 1, 0, 1, 0, 1],
    "yesnos": [2, 2, 2, 2, 2, 2, 2, 2],
    "answers": {
        "answer_starts": [
            [480, 39, 0, 67, 39],
            [2300, 2300, 2300],
            [848, 1023, 848, 848, 1298],
            [2300, 2300, 2300, 2300, 2300],
            [600, 600, 600, 634, 600],
            [2300, 2300, 2300],
            [939, 1431, 848, 848, 1514],
            [2106, 2106, 2165],
        ],
        "texts": [
            [
                "April 1926, shortly after his arrival, he recorded nine strikeouts over six "
                "innings against the Atlanta Black Crackers.",
                HERMAN,
                "A former friend from the Mobile slums, Alex Herman, was the player/manager for "
                "the Chattanooga White Sox of the minor Negro Southern League.",
                "manager for the Chattanooga White Sox of the minor Negro Southern League. In 1926 "
                "he discovered Paige and offered to pay him $250 per month,",
                HERMAN + " and offered to pay him $250 per month,",
            ],
            [CANNOTANSWER] * 3,
            [
                "Pitching for the Black Barons,",
                "fastball",
                "Pitching for",
                "Pitching",
                "Paige improved and matured as a pitcher with help from his teammates,",
            ],
            [CANNOTANSWER] * 5,
            [
                TO_BIRMINGHAM,
                TO_BIRMINGHAM,
                TO_BIRMINGHAM,
                "Paige's contract was sold to the Birmingham Black Barons of the major Negro "
                "National League (NNL",
                TO_BIRMINGHAM,
            ],
            [CANNOTANSWER] * 3,
            [
                "game in late June 1927, against the St. Louis Stars, Paige incited a brawl when "
                "his fastball hit the hand of St. Louis catcher Mitchell Murray.",
                "He finished the 1927 season 7-1 with 69 strikeouts and 26 walks in 89 1/3 "
                "innings.",
                PITCHING,
                PITCHING,
                "Over the next two seasons, Paige went 12-5 and 10-9 while recording 176 "
                "strikeouts in 1929. (",
            ],
            [
                'Due to his increased earning potential, Barons owner R. T. Jackson would "rent" '
                "Paige out to other ball clubs",
                'Due to his increased earning potential, Barons owner R. T. Jackson would "rent" '
                "Paige out to other ball clubs for a game or two to draw a decent crowd,",
                RENT + ", with both Jackson and Paige taking a cut.",
            ],
        ],
    },
    "orig_answers": {
        "answer_starts": [39, 2300, 1298, 2300, 600, 2300, 1514, 2165],
        "texts": [
            HERMAN + " and offered to pay him $250 per month,",
            CANNOTANSWER,
            "Paige improved and matured as a pitcher with help from his teammates,",
            CANNOTANSWER,
            TO_BIRMINGHAM,
            CANNOTANSWER,
            "Over the next two seasons, Paige went 12-5 and 10-9 while recording 176 strikeouts "
            "in 1929. (",
            RENT + ", with both Jackson and Paige taking a cut.",
        ],
    },
}

# ...and a dialogue of QuAC's original val_v0.2.json, kept as that file with this one dialogue
# (C_0aaa843df0bd467b96e5a496fc0b033d_1, "Anna Politkovskaya").
QUAC_VAL_FILE = Path(__file__).parent / "data" / "quac" / "val_v0.2.json"


def anna() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(QUAC_VAL_FILE.read_text(encoding="utf-8"))
    return document


# -- the records written as the original releases lay them out ----------------------------------


def squad_original(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows of the Hub's schema as an original SQuAD file: articles, paragraphs, questions."""
    articles: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        paragraphs = articles.setdefault(row["title"], {})
        answers = row["answers"]
        paragraphs.setdefault(row["context"], []).append(
            {
                "answers": [
                    {"answer_start": start, "text": text}
                    for text, start in zip(answers["text"], answers["answer_start"], strict=True)
                ],
                "question": row["question"],
                "id": row["id"],
            }
        )
    data = [
        {
            "title": title,
            "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()],
        }
        for title, paragraphs in articles.items()
    ]
    return {"data": data, "version": "1.1"}


def quac_original(row: dict[str, Any]) -> dict[str, Any]:
    """A dialogue of the Hub's schema as an original QuAC file."""
    answers, orig = row["answers"], row["orig_answers"]
    qas = [
        {
            "question": question,
            "answers": [
                {"text": text, "answer_start": start}
                for text, start in zip(
                    answers["texts"][i], answers["answer_starts"][i], strict=True
                )
            ],
            "id": turn,
            "orig_answer": {"text": orig["texts"][i], "answer_start": orig["answer_starts"][i]},
        }
        for i, (turn, question) in enumerate(zip(row["turn_ids"], row["questions"], strict=True))
    ]
    paragraph = {"context": row["context"], "qas": qas, "id": row["dialogue_id"]}
    article = {
        "paragraphs": [paragraph],
        "section_title": row["section_title"],
        "background": row["background"],
        "title": row["wikipedia_page_title"],
    }
    return {"data": [article]}


def quac_hub_row(document: dict[str, Any]) -> dict[str, Any]:
    """An original QuAC file's one dialogue in the Hub's schema."""
    article = document["data"][0]
    paragraph = article["paragraphs"][0]
    qas = paragraph["qas"]
    return {
        "dialogue_id": paragraph["id"],
        "wikipedia_page_title": article["title"],
        "background": article["background"],
        "section_title": article["section_title"],
        "context": paragraph["context"],
        "turn_ids": [qa["id"] for qa in qas],
        "questions": [qa["question"] for qa in qas],
        "answers": {
            "answer_starts": [[a["answer_start"] for a in qa["answers"]] for qa in qas],
            "texts": [[a["text"] for a in qa["answers"]] for qa in qas],
        },
        "orig_answers": {
            "answer_starts": [qa["orig_answer"]["answer_start"] for qa in qas],
            "texts": [qa["orig_answer"]["text"] for qa in qas],
        },
    }


def drop_hub_rows(document: dict[str, Any], validation: bool) -> list[dict[str, Any]]:
    """An original DROP file as `ucinlp/drop`'s loading script flattens it: every answer's
    number, date or spans in one list (the validated answers only, for validation)."""
    rows = []
    for section_id, section in document.items():
        for qa in section["qa_pairs"]:
            spans: list[str] = []
            types: list[str] = []
            for answer in qa["validated_answers"] if validation else [qa["answer"]]:
                date = " ".join(v for v in answer["date"].values() if v)
                if answer["number"]:
                    spans, types = [*spans, answer["number"]], [*types, "number"]
                elif date:
                    spans, types = [*spans, date], [*types, "date"]
                spans += answer["spans"]
                types += ["span"] * len(answer["spans"])
            rows.append(
                {
                    "section_id": section_id,
                    "query_id": qa["query_id"],
                    "passage": section["passage"],
                    "question": qa["question"],
                    "answers_spans": {"spans": spans, "types": types},
                }
            )
    return rows


def write_json(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def parquet(rows: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


@pytest.fixture
def squad_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "squad"
    write_json(folder / "dev-v1.1.json", squad_original(SQUAD_VALIDATION))
    write_json(folder / "train-v1.1.json", squad_original(SQUAD_TRAIN))
    return folder.parent


@pytest.fixture
def drop_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "drop"
    write_json(folder / "drop_dataset_dev.json", DROP_DEV)
    write_json(folder / "drop_dataset_train.json", DROP_TRAIN)
    return folder.parent


@pytest.fixture
def quac_dir(tmp_path: Path) -> Path:
    """Anna Politkovskaya to score, and Satchel Paige as the shot. Both are validation
    dialogues (no train dialogue is printed where these tests can cite it); the reader does
    not care which split a file came from."""
    folder = tmp_path / "data" / "quac"
    folder.mkdir(parents=True)
    shutil.copy(QUAC_VAL_FILE, folder / "val_v0.2.json")
    write_json(folder / "train_v0.2.json", quac_original(SATCHEL))
    return folder.parent


SUBJECT_OF_TYPE = {
    "Algebra": "algebra",
    "Counting & Probability": "counting_and_probability",
    "Geometry": "geometry",
    "Intermediate Algebra": "intermediate_algebra",
    "Number Theory": "number_theory",
    "Prealgebra": "prealgebra",
    "Precalculus": "precalculus",
}


def agieval_math() -> list[dict[str, Any]]:
    """AGIEval's MATH subset (real MATH test problems) as MATH's records: problem, level,
    type, solution."""
    require(AGIEVAL_MATH, what="AGIEval's MATH subset")
    with AGIEVAL_MATH.open(encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    return [
        {
            "problem": row["question"],
            "level": f"Level {row['other']['level']}",
            "type": row["other"]["type"],
            "solution": row["other"]["solution"],
            "answer": row["answer"],
        }
        for row in rows
    ]


def math_by_subject(per_subject: int) -> dict[str, list[dict[str, Any]]]:
    """The first problems of each subject in AGIEval's MATH subset, in its order."""
    by_subject: dict[str, list[dict[str, Any]]] = {s: [] for s in hendrycks_math.SUBJECTS}
    for row in agieval_math():
        rows = by_subject[SUBJECT_OF_TYPE[row["type"]]]
        if len(rows) < per_subject:
            rows.append({k: v for k, v in row.items() if k != "answer"})
    return by_subject


@pytest.fixture
def math_dir(tmp_path: Path) -> Path:
    """Two subjects in the original release's layout: MATH/test/<subject>/<n>.json."""
    by_subject = math_by_subject(3)
    for subject in ("algebra", "geometry"):
        for n, row in enumerate(by_subject[subject], start=1):
            write_json(tmp_path / "data" / "MATH" / "test" / subject / f"{n}.json", row)
    return tmp_path / "data"


# -- SQuAD v1.1's metric (its official evaluate-v1.1.py) ---------------------------------------


def test_the_records_are_what_their_offsets_say() -> None:
    """Each answer sits in its passage where the release says it starts: the copies are true."""
    for row in SQUAD_TRAIN + SQUAD_VALIDATION:
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"], strict=True):
            assert row["context"][start : start + len(text)] == text
    for texts, starts in zip(
        SATCHEL["answers"]["texts"], SATCHEL["answers"]["answer_starts"], strict=True
    ):
        for text, start in zip(texts, starts, strict=True):
            assert SATCHEL_CONTEXT[start : start + len(text)] == text
    paragraph = anna()["data"][0]["paragraphs"][0]
    for qa in paragraph["qas"]:
        for answer in [*qa["answers"], qa["orig_answer"]]:
            start = answer["answer_start"]
            assert paragraph["context"][start : start + len(answer["text"])] == answer["text"]


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("the Denver Broncos", "denver broncos"),
        ("Denver Broncos.", "denver broncos"),
        ("  Levi's   Stadium ", "levis stadium"),  # punctuation goes, spaces collapse
        ("An apple, a pear and THE plum", "apple pear and plum"),
        ("Theatre", "theatre"),  # an article goes only as a whole word
        ("24\u201310", "24\u201310"),  # an en dash is not ASCII punctuation: it stays
    ],
)
def test_squad_normalisation(text: str, normalised: str) -> None:
    assert normalize_answer(text) == normalised


def test_squad_exact_match_and_f1_by_hand() -> None:
    """Validation row 2's answers ("Where did Super Bowl 50 take place?"), F1 worked by hand."""
    golds = SQUAD_VALIDATION[1]["answers"]["text"]
    assert squad_exact_match("the Denver Broncos", "Denver Broncos") == 1.0
    # "levis stadium" against the 11 words of "levis stadium in san francisco bay area at santa
    # clara california": precision 2/2, recall 2/11, F1 = 2 * (2/11) / (1 + 2/11) = 4/13.
    assert squad_f1("Levi's Stadium", golds[2]) == pytest.approx(4 / 13)
    # ...but the second gold answer is exactly that: the best over the golds counts.
    assert squad_scores("Levi's Stadium", golds) == (1.0, 1.0)
    # "santa clara" against "santa clara california": precision 1, recall 2/3, F1 = 0.8.
    exact, f1 = squad_scores("Santa Clara", golds)
    assert exact == 0.0 and f1 == pytest.approx(0.8)
    # Words count with repeats: "denver denver broncos" has 2 of its 3 words right.
    assert squad_f1("Denver Denver Broncos", "Denver Broncos") == pytest.approx(0.8)
    assert squad_scores("Carolina Panthers", ["Denver Broncos"]) == (0.0, 0.0)
    assert squad_scores("", golds) == (0.0, 0.0)


# -- DROP's metric (its official drop_eval.py, as lm-eval's drop/utils.py carries it) ------------

# The official evaluator's own tests (allenai/allennlp, allennlp/tests/tools/drop_eval_test.py):
# `get_metrics(predicted, gold)` with its expected (exact match, F1).
DROP_OFFICIAL: list[tuple[Any, Any, tuple[float, float]]] = [
    (["78"], ["78.0"], (1.0, 1.0)),  # numbers are read as floats
    (["td"], ["td", "td"], (0.0, 0.5)),  # F1 is the mean over the larger bag
    ("td", ["td", "td"], (0.0, 0.5)),
    (["td", "td"], ["td"], (0.0, 0.5)),
    (["the", "fat", "cat", "the fat", "fat cat", "the fat cat"], ["cat"], (0.0, 0.17)),
    (["cat"], ["the", "fat", "cat", "the fat", "fat cat", "the fat cat"], (0.0, 0.17)),
    (["the", "fat", "cat", "the fat", "fat cat", "the fat cat"], ["cat", "cat dog"], (0.0, 0.25)),
    (["td"], ["the td"], (1.0, 1.0)),  # articles are ignored
    (["the a NOT an ARTICLE the an a"], ["NOT ARTICLE"], (1.0, 1.0)),
    (["John Elton"], ["Elton John"], (0.0, 1.0)),  # F1 ignores word order
    (["50 yard"], ["yard 50"], (0.0, 1.0)),
    (["Per.i.o.d...."], [".P....e.r,,i;;;o...d,,"], (1.0, 1.0)),
    (["Spa     c  e   s     "], ["    Spa c     e s"], (1.0, 1.0)),
    (["78-yard"], ["78 yard"], (1.0, 1.0)),  # hyphens split words
    (["78"], ["78-yard"], (0.0, 0.67)),
    (["This was a triumph"], ["tHIS Was A TRIUMPH"], (1.0, 1.0)),
    (["Green bay", "packers"], ["Green bay", "packers"], (1.0, 1.0)),
    ([""], ["army"], (0.0, 0.0)),
    (["packers"], ["Green bay packers"], (0.0, 0.5)),
    (["packers"], ["Green bay"], (0.0, 0.0)),
    (["yard"], ["36 yard td"], (0.0, 0.0)),  # a gold number must be predicted
    (["23 yards"], ["43 yards"], (0.0, 0.0)),
    (["56 yards"], ["56 yd"], (0.0, 0.5)),
    (["26"], ["26 yard td"], (0.0, 0.5)),
    # Spans paired one to one, the best pairing: F1s 1.0, 2/3, 0, 0, 0, 0 averaged over 6.
    (
        ["78-yard", "56", "28", "40", "44", "touchdown"],
        ["78-yard", "56 yard", "1 yard touchdown"],
        (0.0, 0.28),
    ),
    (["23", "23 yard"], ["23-yard", "56 yards"], (0.0, 0.5)),  # one copy matches once
    (["John Karman", "Joe Hardy"], ["Joe Karman", "John Hardy"], (0.0, 0.5)),
    (["ottoman", "Kantakouzenous"], ["ottoman", "army of Kantakouzenous"], (0.0, 0.75)),
    (["a"], ["a", "b"], (0.0, 0.5)),
    (["b"], ["b", "a"], (0.0, 0.5)),
]


@pytest.mark.parametrize(("predicted", "gold", "expected"), DROP_OFFICIAL)
def test_drop_metrics_match_the_official_tests(
    predicted: Any, gold: Any, expected: tuple[float, float]
) -> None:
    assert drop_metrics(predicted, gold) == expected


def test_drop_metrics_agree_with_lm_eval() -> None:
    """lm-eval's `get_metrics` (scipy's assignment) and this one (its own exact pairing) give
    the same figures on the official cases and on bags where the pairing matters."""
    get_metrics = importlib.import_module("lm_eval.tasks.drop.utils").get_metrics

    extra: list[tuple[Any, Any]] = [
        (["Chaz Schilens", "JaMarcus Russell"], ["JaMarcus Russell", "Chaz Schilens"]),
        (["1 yard", "2 yard", "3 yard"], ["3 yard touchdown", "1 yard run"]),
        (["a b", "b c", "c d", "d e"], ["b c d", "a", "e"]),
        (["12.0 persons", "twelve"], ["12 persons"]),
    ]
    for predicted, gold in [(p, g) for p, g, _ in DROP_OFFICIAL] + extra:
        exact, f1 = get_metrics(predicted, gold)
        assert drop_metrics(predicted, gold) == (float(exact), float(f1)), (predicted, gold)


def test_drop_normalises_numbers_and_punctuation() -> None:
    """The official tests' number parsing: "12", "12.0", "12.000" and "1.2e1" are one number;
    punctuation goes, except inside a number."""
    assert {drop_normalize(n) for n in ("12.0", "12.0  ", "12.000", "12", "  1.2e1  ")} == {"12.0"}
    assert drop_normalize("12.0 persons") == "12.0 persons"
    assert drop_normalize("S.K. Singh") == "sk singh"
    assert drop_normalize("78-yard") == "78.0 yard"


def drop_eleuther_doc(section: dict[str, Any], qa: dict[str, Any]) -> dict[str, Any]:
    """A DROP question as `EleutherAI/drop` (the dataset lm-eval reads) holds it: the validated
    answers as a record of lists."""
    validated = qa.get("validated_answers", [])
    return {
        "passage": section["passage"],
        "question": qa["question"],
        "answer": qa["answer"],
        "validated_answers": {
            key: [answer[key] for answer in validated] for key in ("number", "date", "spans")
        },
    }


def test_drop_gold_answers_and_scores_agree_with_lm_eval() -> None:
    """lm-eval's `get_answers` and `process_results`, on the validation question whose two
    validated answers disagree, and on the train questions' number, span and date."""
    utils = importlib.import_module("lm_eval.tasks.drop.utils")

    sections = {**DROP_DEV, **DROP_TRAIN}
    for section in sections.values():
        for qa in section["qa_pairs"]:
            doc = drop_eleuther_doc(section, qa)
            ours = drop.gold_answers(qa, "test")
            assert ours == utils.get_answers(doc)
            for prediction in (
                " Chaz Schilens",
                "JaMarcus Russell",
                "Russell",
                "2 field goals",
                "June 1344",
                " Nate Kaeding",
                "Kaeding",
                "",
            ):
                expected = utils.process_results({"answers": ours}, [prediction])
                assert drop_scores(prediction, ours) == (expected["em"], expected["f1"])
    assert drop.gold_answers(DROP_DEV["nfl_1184"]["qa_pairs"][0], "test") == [
        ("Chaz Schilens",),
        ("JaMarcus Russell",),
    ]
    targets = [
        drop.target(drop.gold_answers(s["qa_pairs"][0], "t")[0]) for s in DROP_TRAIN.values()
    ]
    assert targets == ["2", "Nate Kaeding", "June 1344"]


def test_drop_functional_cases_of_the_official_tests() -> None:
    """The official evaluator's `evaluate_json` cases: an answer and its validated answers
    against a prediction, the best over them (records given every field, as DROP's files do)."""
    cases: list[tuple[dict[str, Any], list[dict[str, Any]], str, tuple[float, float]]] = [
        (drop_answer(number="1"), [drop_answer(number="0")], "1", (1.0, 1.0)),
        (drop_answer(spans=("2",)), [drop_answer(number="2")], "2", (1.0, 1.0)),
        (
            drop_answer(spans=("0",)),
            [drop_answer(number="1"), drop_answer(number="2")],
            "1",
            (1.0, 1.0),
        ),
        (
            drop_answer(day="17", month="August"),
            [drop_answer(spans=("August",)), drop_answer(number="17")],
            "17 August",
            (1.0, 1.0),
        ),
        (
            drop_answer(spans=("span1", "span2")),
            [drop_answer(spans=("span2",))],
            "span1",
            (0.0, 0.5),
        ),
        (drop_answer(spans=("answer1",)), [drop_answer(spans=("answer2",))], "answer", (0.0, 0.0)),
    ]
    for answer, validated, prediction, expected in cases:
        golds = drop.gold_answers({"answer": answer, "validated_answers": validated}, "test")
        assert drop_scores(prediction, golds) == expected, (answer, prediction)


# -- QuAC's metric (its official scorer.py) ------------------------------------------------------


def test_quac_handle_cannot() -> None:
    """At least half the references saying CANNOTANSWER make it the answer; else they go."""
    assert handle_cannot([CANNOTANSWER] * 3) == [CANNOTANSWER]
    assert handle_cannot([CANNOTANSWER, CANNOTANSWER, "x", "y"]) == [CANNOTANSWER]  # a tie
    assert handle_cannot([CANNOTANSWER, CANNOTANSWER, "x", "y", "z"]) == ["x", "y", "z"]
    assert handle_cannot(["x"]) == ["x"]


def test_quac_f1_on_the_card_dialogue() -> None:
    """Satchel Paige's turns 2 (every reference CANNOTANSWER) and 3 (five spans)."""
    cannot, position = SATCHEL["answers"]["texts"][1], SATCHEL["answers"]["texts"][2]
    assert quac_f1(CANNOTANSWER, cannot) == 1.0
    assert quac_f1(" CANNOTANSWER", cannot) == 1.0  # the space the prompt leaves before it
    assert quac_f1("Alex Herman discovered him", cannot) == 0.0
    assert quac_f1("CANNOTANSWER, sorry", cannot) == 0.0  # only the exact answer matches it
    assert quac_f1("Pitching", position) == 1.0  # one reference is exactly that
    # "pitcher" is 1 of the 11 words of "paige improved and matured as (a) pitcher with help
    # from his teammates": precision 1, recall 1/11, F1 = 2/12.
    assert quac_f1("a pitcher", position) == pytest.approx(1 / 6)
    assert quac_f1(CANNOTANSWER, position) == 0.0


# -- MATH: the answer read as Minerva reads it, judged by math-verify ---------------------------


def lm_eval_function(path: Path, name: str) -> Callable[..., Any]:
    """One function of an lm-eval task's utils.py, compiled from its source alone: importing
    `minerva_math/utils.py` asserts antlr4 4.11 (for its sympy parser), which math-verify's
    own pin rules out, and the functions needed here use only `re`."""
    import re

    tree = ast.parse(path.read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace: dict[str, Any] = {"re": re}
    exec(compile(ast.Module([node], type_ignores=[]), str(path), "exec"), namespace)
    function: Callable[..., Any] = namespace[name]
    return function


MINERVA_UTILS = LM_EVAL_TASKS / "minerva_math" / "utils.py"


@pytest.mark.parametrize(
    ("text", "boxed"),
    [
        ("so $x = \\boxed{\\frac{a}{b}}$.", "\\frac{a}{b}"),  # nested braces
        ("$\\boxed{1}$, then $\\boxed{2}$", "2"),  # the last one
        ("the answer is $\\boxed 5$.", "5"),  # the brace-less form, up to the dollar
        ("\\fbox{7}", "7"),
        ("\\boxed{\\frac{1}{2", None),  # cut off inside it
        ("no box here", None),
    ],
)
def test_last_boxed(text: str, boxed: str | None) -> None:
    """The forms lm-eval's `last_boxed_only_string` reads."""
    assert hendrycks_math.last_boxed(text) == boxed


@pytest.mark.parametrize(
    ("gold", "answer", "same"),
    [
        ("\\frac{1}{2}", "0.5", True),
        ("2\\sqrt{2}", "\\sqrt{8}", True),
        ("[2,5)", "[2,5)", True),  # an interval
        ("-\\frac{2}{3}", "$-\\frac{2}{3}$", True),  # as Minerva's final-answer line writes it
        ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", True),
        ("(3,4]", "[3,4]", False),
        ("24", "25", False),  # a wrong answer
        ("24", "", False),
        ("24", None, False),  # nothing extracted
    ],
)
def test_math_equivalence(gold: str, answer: str | None, same: bool) -> None:
    assert hendrycks_math.equivalent(gold, answer) is same


def test_math_equivalence_outside_the_main_thread() -> None:
    """math-verify's timeouts need the main thread's signals; a worker thread still judges."""
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(hendrycks_math.equivalent, "\\frac{1}{2}", "0.5").result() is True
        assert pool.submit(hendrycks_math.equivalent, "24", "25").result() is False
    assert threading.current_thread() is threading.main_thread()


def test_minerva_answers_are_read_as_lm_eval_reads_them() -> None:
    """The final-answer line of Minerva's own solutions, and lm-eval's
    `get_unnormalized_answer` on the same texts and on texts the model may write."""
    unnormalized = lm_eval_function(MINERVA_UTILS, "get_unnormalized_answer")
    finals = ["$[2,5)$", "$24$", "$16$", "$-\\frac{2}{3}$"]
    for shot, final in zip(hendrycks_math.MINERVA_SHOTS, finals, strict=True):
        solution = shot["solution"]
        assert hendrycks_math.final_answer(solution) == final == unnormalized(solution)
        boxed = hendrycks_math.last_boxed(solution)
        assert boxed is not None and hendrycks_math.equivalent(boxed, final)
    for text in (
        "So $x=3$.\nFinal Answer: The final answer is $3$. I hope it is correct.",
        "Final Answer: The final answer is $3$.",  # stopped before the closing sentence
        "Final Answer: The final answer is 7. I hope it is correct.",
        "We get $\\boxed{12}$.",  # no such line: lm-eval's reading finds nothing
    ):
        expected = unnormalized(text)
        assert hendrycks_math.final_answer(text) == (
            None if expected == "[invalidanswer]" else expected
        )
    # With no final-answer line, the last box is the answer.
    assert hendrycks_math.extract_answer("We get $\\boxed{12}$.") == "12"
    assert hendrycks_math.extract_answer("I do not know.") is None


@pytest.mark.slow
def test_math_real_gold_answers() -> None:
    """On AGIEval's 1,000 MATH problems: the gold read from each solution is what lm-eval's
    `last_boxed_only_string` and `remove_boxed` read, math-verify finds it equal to AGIEval's
    own answer, and it tells different integers apart."""
    last_boxed_only = lm_eval_function(MINERVA_UTILS, "last_boxed_only_string")
    remove_boxed = lm_eval_function(MINERVA_UTILS, "remove_boxed")
    rows = agieval_math()
    assert len(rows) == 1000
    golds = [hendrycks_math.gold_answer(row["solution"], "test") for row in rows]
    for row, gold in zip(rows, golds, strict=True):
        assert gold == remove_boxed(last_boxed_only(row["solution"]))
        assert hendrycks_math.equivalent(gold, row["answer"]), gold
    integers = [(a, b) for a, b in itertools.pairwise(golds) if a.isdigit() and b.isdigit()]
    assert len(integers) > 100
    for a, b in integers[:200]:
        assert hendrycks_math.equivalent(a, b) is (int(a) == int(b)), (a, b)


# -- the prompts, string for string against lm-eval ---------------------------------------------


def lm_eval_yaml(path: Path) -> dict[str, Any]:
    """An lm-eval task config, its `!function` references read as None."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    config: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
    return config


def test_squad_prompt_is_lm_evals() -> None:
    """lm-eval's `squadv2` `doc_to_text` for the question; an exemplar adds one space and the
    first answer; a blank line between them."""
    squad2 = importlib.import_module("lm_eval.tasks.squadv2.task").SQuAD2

    def doc_to_text(row: dict[str, Any]) -> str:
        text: str = squad2.doc_to_text(None, row)  # it reads nothing of the task itself
        return text

    train, validation = squad.hub_rows(SQUAD_TRAIN, "train"), squad.hub_rows(SQUAD_VALIDATION, "v")
    assert [squad.question_text(r) for r in validation] == [
        doc_to_text(r) for r in SQUAD_VALIDATION
    ]
    assert doc_to_text(SQUAD_VALIDATION[0]) == (
        "Title: Super_Bowl_50\n\nBackground: " + SUPER_BOWL + "\n\n"
        "Question: Which NFL team represented the AFC at Super Bowl 50?\n\nAnswer:"
    )
    assert squad.exemplar(train[0]) == doc_to_text(SQUAD_TRAIN[0]) + " Saint Bernadette Soubirous"
    assert squad.SQuAD.stop == ("\n",)


def test_drop_prompt_is_lm_evals(tmp_path: Path) -> None:
    """lm-eval's `drop` `doc_to_text` template rendered on the same question, and its stop."""
    import jinja2

    config = lm_eval_yaml(LM_EVAL_TASKS / "drop" / "default.yaml")
    template = jinja2.Template(config["doc_to_text"])
    section = DROP_DEV["nfl_1184"]
    row = drop.original_rows(write_json(tmp_path / "dev.json", {"nfl_1184": section}))[0]
    assert drop.question_text(row) == template.render(
        passage=section["passage"], question=section["qa_pairs"][0]["question"]
    )
    assert drop.question_text(row).endswith(
        "shut down any possible attempt. Who scored the first touchdown of the game?"
    )
    assert set(config["generation_kwargs"]["until"]) < set(drop.DROP.stop)  # "." and "\n"


def test_math_prompt_is_lm_evals() -> None:
    """lm-eval's `minerva_math` shots, `doc_to_text`, stop and shot count."""
    tree = ast.parse(MINERVA_UTILS.read_text(encoding="utf-8"))
    listing = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "list_fewshot_samples"
    )
    returned = next(n for n in ast.walk(listing) if isinstance(n, ast.Return))
    assert returned.value is not None
    samples = ast.literal_eval(returned.value)
    assert [{"problem": s["problem"], "solution": s["solution"]} for s in samples] == list(
        hendrycks_math.MINERVA_SHOTS
    )
    doc_to_text = lm_eval_function(MINERVA_UTILS, "doc_to_text")
    task = hendrycks_math.MATH()
    assert task.prefix() == "".join(doc_to_text(s) + " " + s["solution"] + "\n\n" for s in samples)
    problem = "What is $1+1$?"
    assert hendrycks_math.question_text(problem) == doc_to_text({"problem": problem})
    config = lm_eval_yaml(LM_EVAL_TASKS / "minerva_math" / "minerva_math_algebra.yaml")
    assert list(hendrycks_math.MATH.stop) == config["generation_kwargs"]["until"]
    assert task.shots == config["num_fewshot"] == 4
    assert (
        hendrycks_math.MATH(shots=1).prefix()
        == doc_to_text(samples[0]) + " " + samples[0]["solution"] + "\n\n"
    )


# -- the data: the original files, the Hub's parquet files, bad files ---------------------------


def prompts(task: GeneratedTask) -> list[tuple[str, str]]:
    return [(item.key, task.prompt(item)) for item in task.items()]


def test_squad_reads_the_original_files_and_the_hub(squad_dir: Path, online_hub: Hub) -> None:
    local = make_task("squad", None, None, squad_dir)
    assert isinstance(local, squad.SQuAD) and local.shots == 1
    assert [item.key for item in local.items()] == [r["id"] for r in SQUAD_VALIDATION]
    assert local.items()[1].data["answers"] == SQUAD_VALIDATION[1]["answers"]["text"]
    assert local.config()["exemplars"] == ["5733be284776f41900661182"]
    assert local.prefix() == squad.exemplar(squad.hub_rows(SQUAD_TRAIN, "train")[0]) + "\n\n"
    online_hub.add_dataset(
        "rajpurkar/squad",
        {
            "plain_text/train-00000-of-00001.parquet": parquet(SQUAD_TRAIN),
            "plain_text/validation-00000-of-00001.parquet": parquet(SQUAD_VALIDATION),
        },
    )
    assert prompts(squad.SQuAD()) == prompts(local)


def test_drop_reads_the_original_files_and_the_hub(drop_dir: Path, online_hub: Hub) -> None:
    local = make_task("drop", None, None, drop_dir)
    assert isinstance(local, drop.DROP) and local.shots == 3
    (item,) = local.items()
    assert item.key == "f37e81fa-ef7b-4583-b671-762fc433faa9"
    assert item.data["answers"] == [["Chaz Schilens"], ["JaMarcus Russell"]]
    assert sorted(local.config()["exemplars"]) == sorted(
        qa["query_id"] for s in DROP_TRAIN.values() for qa in s["qa_pairs"]
    )
    assert local.prompt(item).count("\n\n") == 3  # three shots, each ended by a blank line
    online_hub.add_dataset(
        "ucinlp/drop",
        {
            "data/train-00000-of-00001.parquet": parquet(drop_hub_rows(DROP_TRAIN, False)),
            "data/validation-00000-of-00001.parquet": parquet(drop_hub_rows(DROP_DEV, True)),
        },
    )
    hub = drop.DROP()
    assert prompts(hub) == prompts(local)
    assert hub.items()[0].data["answers"] == item.data["answers"]


def test_quac_reads_the_original_files_and_the_hub(quac_dir: Path, online_hub: Hub) -> None:
    local = make_task("quac", None, None, quac_dir)
    assert isinstance(local, quac.QuAC) and local.shots == 1
    items = local.items()
    assert [item.key for item in items] == [
        qa["id"] for qa in anna()["data"][0]["paragraphs"][0]["qas"]
    ]
    assert local.config()["exemplars"] == [SATCHEL_ID]
    # The third question: the first two answered by the teacher, the CANNOTANSWER suffix gone.
    third = local.prompt(items[2])
    shot, asked = third.split("\n\nTitle: Anna Politkovskaya\n\n")
    assert shot.startswith("Title: Satchel Paige\n\nBackground: Leroy Robert")
    assert shot.endswith(
        "Question: What made him leave the team\nAnswer: "
        + RENT
        + ", with both Jackson and Paige taking a cut."
    )
    assert "Paige taking a cut.\n\n" in shot and "CANNOTANSWER\n\nQuestion" in shot
    assert "journalist.[1]\n\nQuestion: Did they have any clues?\nAnswer: probably FSB)" in asked
    assert asked.endswith(
        "Question: How did they target her email?\nAnswer: On 5 December 2005, RFIS initiated "
        "an attack against the account annapolitovskaya@US Provider1, by deploying malicious "
        "software\n\nQuestion: Did they get into trouble for that?\nAnswer:"
    )
    assert items[2].data["dialogue"]["turns"][2]["references"] == [CANNOTANSWER] * 3
    # allenai/quac's main branch holds its loading script alone; its parquet files are the
    # Hub's conversion, on refs/convert/parquet (docs/eval.md).
    online_hub.add_dataset("allenai/quac", QUAC_SCRIPT_ONLY)
    online_hub.add_dataset(
        "allenai/quac",
        {
            "plain_text/train/0000.parquet": parquet([SATCHEL]),
            "plain_text/validation/0000.parquet": parquet([quac_hub_row(anna())]),
        },
        branch="refs/convert/parquet",
    )
    assert prompts(quac.QuAC()) == prompts(local)
    assert online_hub.requests("/api/datasets/allenai/quac/revision/refs/convert/parquet")


QUAC_SCRIPT_ONLY: dict[str, Path | bytes] = {
    "quac.py": b"# the dataset's loading script\n",
    "README.md": b"---\nlicense: mit\n---\n",
}


def test_quac_says_when_the_hub_has_no_parquet(online_hub: Hub) -> None:
    """A dataset kept as a loading script, with no conversion branch either, has no parquet
    files: one line saying what to pass."""
    online_hub.add_dataset("allenai/quac", QUAC_SCRIPT_ONLY)
    with pytest.raises(UsageError) as error:
        quac.QuAC().items()
    message = str(error.value)
    assert "allenai/quac has no parquet files" in message and "val_v0.2.json" in message
    assert "on its main branch or on refs/convert/parquet" in message
    assert "\n" not in message


def test_math_reads_the_original_release_and_the_hub(math_dir: Path, online_hub: Hub) -> None:
    local = make_task("math", None, 2, math_dir)
    assert isinstance(local, hendrycks_math.MATH) and local.shots == 4
    items = local.items()
    assert [item.key for item in items] == ["algebra/1", "algebra/2", "geometry/1", "geometry/2"]
    assert {item.group for item in items} == {"algebra", "geometry"}
    first = math_by_subject(1)["algebra"][0]
    assert items[0].data["problem"] == first["problem"]
    assert items[0].data["answer"] == hendrycks_math.last_boxed(first["solution"])
    by_subject = math_by_subject(2)
    online_hub.add_dataset(
        "EleutherAI/hendrycks_math",
        {f"{s}/test-00000-of-00001.parquet": parquet(rows) for s, rows in by_subject.items()},
    )
    hub = hendrycks_math.MATH(limit=1)
    assert [item.key for item in hub.items()] == [f"{s}/0" for s in hendrycks_math.SUBJECTS]
    assert hub.items()[0].data == items[0].data  # the same first algebra problem
    # The Hub's layout in a folder reads the same.
    for subject, rows in by_subject.items():
        (math_dir / "hub" / subject).mkdir(parents=True)
        (math_dir / "hub" / subject / "test-00000-of-00001.parquet").write_bytes(parquet(rows))
    assert prompts(hendrycks_math.MATH(limit=1, data_dir=math_dir / "hub")) == prompts(hub)


def one_line_error(make: Callable[[], Any], *parts: str) -> None:
    with pytest.raises(UsageError) as error:
        make()
    message = str(error.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message


def test_bad_files_are_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "squad"
    write_json(folder / "dev-v1.1.json", {"data": [{"title": "t", "paragraphs": "oops"}]})
    one_line_error(lambda: squad.SQuAD(data_dir=folder).items(), "'paragraphs' is not a list")
    (folder / "dev-v1.1.json").write_text("{not json", encoding="utf-8")
    one_line_error(lambda: squad.SQuAD(data_dir=folder).items(), "dev-v1.1.json: not a readable")
    broken = squad_original(SQUAD_VALIDATION)
    del broken["data"][0]["paragraphs"][0]["qas"][1]["question"]
    write_json(folder / "dev-v1.1.json", broken)
    one_line_error(
        lambda: squad.SQuAD(data_dir=folder).items(),
        "data[0].paragraphs[0].qas[1]: the record has no 'question' field",
    )
    # The shots need the train file.
    write_json(folder / "dev-v1.1.json", squad_original(SQUAD_VALIDATION))
    one_line_error(lambda: squad.SQuAD(data_dir=folder).prefix(), "no train-v1.1.json")

    folder = tmp_path / "drop"
    section = json.loads(json.dumps(DROP_DEV["nfl_1184"]))
    del section["qa_pairs"][0]["validated_answers"][1]["spans"]
    write_json(folder / "drop_dataset_dev.json", {"nfl_1184": section})
    one_line_error(
        lambda: drop.DROP(data_dir=folder).items(), "nfl_1184.qa_pairs[0]", "no 'spans' field"
    )

    folder = tmp_path / "quac"
    document = anna()
    del document["data"][0]["paragraphs"][0]["qas"][3]["orig_answer"]
    write_json(folder / "val_v0.2.json", document)
    one_line_error(lambda: quac.QuAC(data_dir=folder).items(), "qas[3]", "no 'orig_answer'")

    folder = tmp_path / "math"
    problem = {"problem": "What is $1+1$?", "level": "Level 1", "type": "Algebra"}
    write_json(folder / "test" / "algebra" / "1.json", problem)
    one_line_error(lambda: hendrycks_math.MATH(data_dir=folder).items(), "no 'solution' field")
    write_json(folder / "test" / "algebra" / "1.json", {**problem, "solution": "It is 2."})
    one_line_error(
        lambda: hendrycks_math.MATH(data_dir=folder).items(),
        "1.json: the solution has no \\boxed{} answer",
    )
    one_line_error(lambda: hendrycks_math.MATH(shots=5), "Minerva's prompt has 4 shots")
    folder = tmp_path / "quac-one-shot"
    shutil.copytree(QUAC_VAL_FILE.parent, folder)
    write_json(folder / "train_v0.2.json", quac_original(SATCHEL))
    one_line_error(
        lambda: quac.QuAC(shots=2, data_dir=folder).prefix(),
        "quac: 2 shots, but the train split has 1",
    )


# -- a tiny run of each on the real embedded model ----------------------------------------------

# Two items each, with few new tokens: the wiring (prompts to the engine's slots, each answer
# scored and stored, the summary), not the model's skill, which at 135M parameters is near 0.
RUN_TOKENS = 12


@pytest.fixture(scope="module")
def model(smollm_path: Path) -> Iterator[EvalModel]:
    # 2,048 tokens a slot: the longest prompt here, QuAC's, is about 800.
    model = EvalModel(smollm_path, context=2048, parallel=2)
    try:
        yield model
    finally:
        model.close()


def run_two(task: GeneratedTask, model: EvalModel, tmp_path: Path) -> list[ItemResult]:
    """The task's first two items through `run_task`; the stored results, checked."""
    with EvalStore(tmp_path / "evals.sqlite3") as store:
        run, summary = run_task(task, model, store, "default")
        results = store.results(run.id)
        stored = store.get(run.id)
    assert summary["items"] == 2 and set(summary["metrics"]) == set(task.metrics)
    assert stored.config["exemplars"] == task.exemplars() and stored.config["parallel"] == 2
    assert stored.config["max_tokens"] == RUN_TOKENS and stored.config["stop"] == list(task.stop)
    assert sorted(r.key for r in results) == sorted(item.key for item in task.items())
    items = {item.key: item for item in task.items()}
    for result in results:
        assert set(result.metrics) == set(task.metrics)
        assert all(0.0 <= value <= 1.0 for value in result.metrics.values())
        assert result.detail["finish_reason"] in ("stop", "length")
        assert 0 <= result.detail["completion_tokens"] <= RUN_TOKENS
        # The stored figures are the metric's, on the text that came back.
        again = task.score(items[result.key], result.detail["generation"])
        assert again.metrics == result.metrics
        for stop in task.stop:
            assert stop not in result.detail["generation"]
    return results


@pytest.mark.slow
def test_squad_runs_on_the_model(model: EvalModel, squad_dir: Path, tmp_path: Path) -> None:
    task = squad.SQuAD(limit=2, data_dir=squad_dir / "squad", max_tokens=RUN_TOKENS)
    results = run_two(task, model, tmp_path)
    assert {r.key for r in results} == {r["id"] for r in SQUAD_VALIDATION}


@pytest.mark.slow
def test_drop_runs_on_the_model(model: EvalModel, drop_dir: Path, tmp_path: Path) -> None:
    """The Raiders question and, as a second item, a train question (the OLMES shots' fifth,
    history_2184), scored with one shot."""
    census = (
        "As of the census of 2000, there were 218,590 people, 79,667 households, and 60,387 "
        "families residing in the county.  The population density was 496 people per square "
        "mile (192/km\u00b2). There were 83,146 housing units at an average density of 189 per "
        "square mile (73/km\u00b2)."
    )
    dev = {
        **DROP_DEV,
        "history_2184": {
            "passage": census,
            "qa_pairs": [
                {
                    "question": "How many more people were there than families?",
                    "answer": drop_answer(number="158203"),
                    "query_id": "c312a5d0-5318-4bbb-806e-22333f00e990",
                }
            ],
        },
    }
    write_json(drop_dir / "drop" / "drop_dataset_dev.json", dev)
    task = drop.DROP(1, limit=2, data_dir=drop_dir / "drop", max_tokens=RUN_TOKENS)
    run_two(task, model, tmp_path)


@pytest.mark.slow
def test_quac_runs_on_the_model(model: EvalModel, quac_dir: Path, tmp_path: Path) -> None:
    """No shot: a whole dialogue as the shot doubles the prompt, the longest of the four, and
    its text is checked above; the run is the wiring."""
    task = quac.QuAC(0, limit=2, data_dir=quac_dir / "quac", max_tokens=RUN_TOKENS)
    results = run_two(task, model, tmp_path)
    assert {r.key for r in results} == {
        f"C_0aaa843df0bd467b96e5a496fc0b033d_1_q#{i}" for i in (0, 1)
    }


@pytest.mark.slow
def test_math_runs_on_the_model(model: EvalModel, math_dir: Path, tmp_path: Path) -> None:
    """One problem of each of two subjects, one Minerva shot."""
    task = hendrycks_math.MATH(1, limit=1, data_dir=math_dir, max_tokens=RUN_TOKENS)
    results = run_two(task, model, tmp_path)
    assert {r.group for r in results} == {"algebra", "geometry"}
    for result in results:
        expected = hendrycks_math.extract_answer(result.detail["generation"])
        assert result.detail["extracted"] == expected
