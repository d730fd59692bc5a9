"""`scheda eval` against lm-evaluation-harness on MMLU: the same items, accuracy and wall time.

    .venv/bin/python benchmarks/eval_vs_lm_eval.py [--data DIR] [--per-subject 18]
        [--batch-size N | --sweep 1,4,8,16] [--subjects a,b] [--work DIR]
        [--out docs/eval_vs_lm_eval.json] [--png docs/eval_vs_lm_eval.png] [--plot]

The items: the MMLU test CSVs in DIR (`<subject>_test.csv`, no header, columns
question,A,B,C,D,answer). They are rewritten, in a work folder, in the original
release's layout with a dev split, so that both tools take the same five
exemplars: per subject, `dev/<subject>_dev.csv` holds the first 5 test rows and
`test/<subject>_test.csv` the rest (a DIR that already has test/ and dev/ is
used as it is). Both score the first `--per-subject` test rows of every
subject, 5-shot: 57 × 18 = 1,026 items by default.

The contenders, run one after another, each a complete process timed from its
start to its exit (imports, model load and scoring included):

- lm-evaluation-harness (`lm_eval`, a benchmark dependency only), its `hf`
  backend, float32 on the CPU, on the HF folder `scheda convert default` makes
  of the embedded GGUF; one task YAML per subject over the local CSVs, the
  MMLU template of lm-eval's own `mmlu` task (description, `first_n` dev
  exemplars, " A".." D" choices), and a group that averages over all items;
  `--log_samples` for its per-item answers. Its batch size is the fastest of
  `--sweep`, measured on a few subjects first, unless `--batch-size` is given.
- `scheda eval HF_FOLDER`: the same folder through scheda's transformers
  scorer: the same weights in the same framework, so the like-for-like run
  both targets are judged on.
- `scheda eval default`: the embedded Q4_1 GGUF through llama.cpp's scorer,
  reported beside them: its weights are quantized, and its speed is bound by
  llama.cpp's Q4_1 prompt rate on the CPU at hand.

Each scheda run gets a fresh data folder (`SCHEDA_DATA_DIR`), so nothing
resumes from an earlier run; its per-item answers are read from that run's
store. Before each timed run the script waits until other programs leave the
machine alone, and it records the share of the CPU they took meanwhile.

The targets (from the evaluation issue): on at least 1,000 items, scheda's
MMLU accuracy within 0.5 points of lm-eval's; and scheda at least 3 × faster
than the lm-eval run, wall time for the same items.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mmlu"
SHOTS = 5
LETTERS = ("A", "B", "C", "D")
TASK_PREFIX = "scheda_bench_mmlu_"
GROUP = "scheda_bench_mmlu"
# The targets: agreement in accuracy points on at least MIN_ITEMS items, and speed.
TARGET_POINTS = 0.5
MIN_ITEMS = 1000
TARGET_SPEEDUP = 3.0
# Other programs' share of the CPU above which a run is not started yet (its wall time
# would measure them too), and how long to wait for the machine to go quiet.
QUIET_SHARE = 0.15
QUIET_WAIT_S = 1800
# Over this long: another benchmark's pauses between its own runs last a few seconds.
QUIET_WINDOW_S = 10.0
POLL_S = 1.0
SHORT = {"lm-eval": "lm-eval (hf)", "hf": "scheda, HF folder", "gguf": "scheda, GGUF"}

# lm-eval's MMLU prompt (its `mmlu` task's template), over CSV columns A-D; a Jinja template.
DOC_TO_TEXT = r"{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\nAnswer:"

LM_EVAL_TASK = """\
task: {task}
dataset_path: csv
dataset_kwargs:
  data_files:
    dev: {dev}
    test: {test}
  column_names: [question, A, B, C, D, answer]
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
num_fewshot: {shots}
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about {name}.\\n\\n"
doc_to_text: "{doc_to_text}"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: "{{{{['A', 'B', 'C', 'D'].index(answer.strip())}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

# weight_by_size: the group's figure is the mean over all items (micro), as scheda's `acc`.
LM_EVAL_GROUP = """\
group: {group}
task:
{tasks}
aggregate_metric_list:
  - metric: acc
    weight_by_size: true
metadata:
  version: 1.0
"""


@dataclass
class Answer:
    """One item as a tool scored it: the right choice, its pick, the four log-likelihoods."""

    gold: int
    pred: int
    logliks: list[float]


@dataclass
class Timing:
    wall_s: float
    cpu_s: float  # the run's own CPU time (user + system), all its threads
    others_share: float  # the share of the machine other programs took meanwhile


@dataclass
class Contender:
    name: str  # the key in the JSON
    label: str
    command: str  # as a reader would type it: folders as placeholders
    timing: Timing
    reported_acc: float  # the tool's own summary figure, to cross-check ours
    answers: dict[str, Answer] = field(repr=False, default_factory=dict)

    @property
    def acc(self) -> float:
        return sum(a.pred == a.gold for a in self.answers.values()) / len(self.answers)


# -- the machine ----------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": psutil.cpu_count(logical=False),
        "threads": psutil.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def versions() -> dict[str, str | None]:
    names = ("scheda", "lm_eval", "torch", "transformers", "datasets", "llama_cpp_python")
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def busy_s() -> float:
    """CPU seconds the whole machine has been busy (all programs, all cores)."""
    t = psutil.cpu_times()
    return float(sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq")))


def children_cpu_s() -> float:
    """CPU seconds of the child processes this script has waited for (their threads too)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def others_share(seconds: float = 2.0) -> float:
    """Share of the machine that programs other than this script use, over `seconds`."""
    busy, own = busy_s(), time.process_time()
    time.sleep(seconds)
    others = busy_s() - busy - (time.process_time() - own)
    return max(0.0, others) / (seconds * (psutil.cpu_count() or 1))


def wait_quiet(on_wait: Callable[[float], None], most: float = QUIET_SHARE) -> float:
    """Wait until other programs leave the machine alone (or QUIET_WAIT_S); their last share."""
    start = time.monotonic()
    while True:
        share = others_share(QUIET_WINDOW_S)
        if share <= most or time.monotonic() - start > QUIET_WAIT_S:
            return share
        on_wait(share)


# -- the items ------------------------------------------------------------------------------


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [row for row in csv.reader(f) if row]


def write_rows(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


def build_layout(source: Path, dest: Path, subjects: list[str] | None) -> list[str]:
    """dest/test and dest/dev as the original release has them; the subjects, sorted.

    Where `source` has only test files, each subject's first SHOTS rows become its dev
    split, so both tools draw the same exemplars and none of them is scored.
    """
    if (source / "test").is_dir() and (source / "dev").is_dir():
        shutil.copytree(source / "test", dest / "test")
        shutil.copytree(source / "dev", dest / "dev")
    else:
        (dest / "test").mkdir(parents=True)
        (dest / "dev").mkdir(parents=True)
        for path in sorted(source.glob("*_test.csv")):
            subject = path.name.removesuffix("_test.csv")
            rows = read_rows(path)
            write_rows(dest / "dev" / f"{subject}_dev.csv", rows[:SHOTS])
            write_rows(dest / "test" / f"{subject}_test.csv", rows[SHOTS:])
    found = sorted(p.name.removesuffix("_test.csv") for p in (dest / "test").glob("*_test.csv"))
    if not found:
        raise SystemExit(f"{source}: no <subject>_test.csv files")
    unknown = sorted(set(subjects or []) - set(found))
    if unknown:
        raise SystemExit(f"unknown subject {unknown[0]!r}")
    keep = [s for s in found if not subjects or s in subjects]
    for path in (dest / "test").glob("*_test.csv"):  # scheda scores every file in test/
        if path.name.removesuffix("_test.csv") not in keep:
            path.unlink()
    return keep


def hf_folder(folder: Path) -> Path:
    """The embedded GGUF as an HF folder (float16 safetensors), converted once and kept."""
    if not (folder / "config.json").is_file():
        if folder.exists():
            shutil.rmtree(folder)
        scheda = str(Path(sys.executable).parent / "scheda")
        subprocess.run([scheda, "convert", "default", str(folder)], check=True, capture_output=True)
    return folder


def write_lm_eval_tasks(layout: Path, subjects: list[str], dest: Path) -> None:
    """One task YAML per subject over the local CSVs, and the group of them all."""
    dest.mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        text = LM_EVAL_TASK.format(
            task=TASK_PREFIX + subject,
            dev=layout / "dev" / f"{subject}_dev.csv",
            test=layout / "test" / f"{subject}_test.csv",
            shots=SHOTS,
            name=subject.replace("_", " "),
            doc_to_text=DOC_TO_TEXT,
        )
        (dest / f"{TASK_PREFIX}{subject}.yaml").write_text(text, encoding="utf-8")
    tasks = "\n".join(f"  - {TASK_PREFIX}{s}" for s in subjects)
    group = LM_EVAL_GROUP.format(group=GROUP, tasks=tasks)
    (dest / f"{GROUP}.yaml").write_text(group, encoding="utf-8")


def scheda_prompts(layout: Path, per_subject: int) -> dict[str, str]:
    """The prompt scheda scores for each item, by item key, to hold against lm-eval's."""
    from scheda.evaluation.multiple_choice import MMLU

    task = MMLU(SHOTS, per_subject, layout / "test")
    if task.exemplar_source != "dev":
        raise SystemExit("scheda did not find the dev split beside the test files")
    return {item.key: item.data["context"] for item in task.items()}


# -- running a contender --------------------------------------------------------------------


def offline_env(work: Path) -> dict[str, str]:
    """No network, and a Hugging Face home of our own (its dataset cache included)."""
    return {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(work / "hf"),
    }


def timed(
    command: list[str],
    env: dict[str, str],
    logs: Path,
    poll: Callable[[], tuple[int, int] | None],
    on_poll: Callable[[tuple[int, int] | None], None],
) -> Timing:
    """Run a command to its end: its wall time, its CPU time, and what others took meanwhile."""
    logs.parent.mkdir(parents=True, exist_ok=True)
    busy, children, own = busy_s(), children_cpu_s(), time.process_time()
    with (
        logs.with_suffix(".out").open("w") as out,
        logs.with_suffix(".err").open("w") as err,
    ):
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        while process.poll() is None:
            time.sleep(POLL_S)
            on_poll(poll())
        wall = time.perf_counter() - start
    if process.returncode != 0:
        tail = logs.with_suffix(".err").read_text(errors="replace")[-3000:]
        raise SystemExit(f"{command[0]} failed ({process.returncode}):\n{tail}")
    cpu = children_cpu_s() - children
    others = busy_s() - busy - cpu - (time.process_time() - own)
    return Timing(wall, cpu, max(0.0, others) / (wall * (psutil.cpu_count() or 1)))


LM_EVAL_PROGRESS = re.compile(r"Running loglikelihood requests:\s*\d+%\|[^|]*\|\s*(\d+)/(\d+)")


def lm_eval_progress(stderr: Path) -> Callable[[], tuple[int, int] | None]:
    """Requests done and in all, from the tail of lm-eval's progress bar."""

    def poll() -> tuple[int, int] | None:
        try:
            with stderr.open("rb") as f:
                f.seek(max(0, f.seek(0, 2) - 4096))
                tail = f.read().decode(errors="replace")
        except OSError:
            return None
        found = LM_EVAL_PROGRESS.findall(tail)
        return (int(found[-1][0]), int(found[-1][1])) if found else None

    return poll


def lm_eval_command(
    folder: Path, tasks: Path, names: str, per_subject: int, batch: int, out: Path
) -> list[str]:
    return [
        str(Path(sys.executable).parent / "lm_eval"),
        "--model", "hf",
        "--model_args", f"pretrained={folder},dtype=float32",
        "--device", "cpu",
        "--batch_size", str(batch),
        "--tasks", names,
        "--include_path", str(tasks),
        "--limit", str(per_subject),
        "--output_path", str(out),
        "--log_samples",
    ]  # fmt: skip


def prepare_lm_eval_datasets(tasks: Path, names: list[str], env: dict[str, str]) -> None:
    """Build lm-eval's dataset cache before it is timed: CSV to Arrow is a one-off cost,
    and lm-eval's own loader makes the cache exactly as the timed run will look it up."""
    code = (
        "import sys\n"
        "from lm_eval.tasks import TaskManager, get_task_dict\n"
        "get_task_dict(sys.argv[2:], TaskManager(include_path=sys.argv[1]))\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(tasks), *names],
        env=env,
        check=True,
        capture_output=True,
    )


def read_lm_eval(out: Path) -> tuple[dict[str, Answer], dict[str, str], float]:
    """lm-eval's per-item answers and prompts by item key, and its group's accuracy."""
    answers: dict[str, Answer] = {}
    prompts: dict[str, str] = {}
    for path in out.rglob("samples_*.jsonl"):
        subject = path.name.removeprefix("samples_" + TASK_PREFIX).rsplit("_", 1)[0]
        with path.open(encoding="utf-8") as f:
            for line in f:
                sample = json.loads(line)
                key = f"{subject}/{sample['doc_id']}"
                logliks = [float(r[0]) for r in sample["filtered_resps"]]
                pred = max(range(len(logliks)), key=lambda i: (logliks[i], -i))
                answers[key] = Answer(int(sample["target"]), pred, logliks)
                prompts[key] = sample["arguments"]["gen_args_0"]["arg_0"]
    [results] = list(out.rglob("results_*.json"))
    figures = json.loads(results.read_text(encoding="utf-8"))["results"]
    reported = figures[GROUP]["acc,none"] if GROUP in figures else math.nan
    return answers, prompts, float(reported)


def scheda_progress(store: Path) -> Callable[[], tuple[int, int] | None]:
    """Items stored and in all, read from the run's own store as it writes it."""

    def poll() -> tuple[int, int] | None:
        if not store.is_file():
            return None
        try:
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1) as db:
                total = db.execute("SELECT items FROM runs LIMIT 1").fetchone()
                done = db.execute("SELECT count(*) FROM results").fetchone()
        except sqlite3.Error:
            return None
        return (int(done[0]), int(total[0])) if total else None

    return poll


def read_scheda(store: Path) -> dict[str, Answer]:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT key, detail FROM results").fetchall()
    answers = {}
    for key, detail in rows:
        d = json.loads(detail)
        answers[key] = Answer(int(d["gold"]), int(d["pred"]), [float(x) for x in d["logliks"]])
    return answers


def scheda_command(model: str, layout: Path, per_subject: int) -> list[str]:
    return [
        str(Path(sys.executable).parent / "scheda"),
        "eval", model,
        "--tasks", "mmlu",
        "--shots", str(SHOTS),
        "--limit", str(per_subject),
        "--data", str(layout),
        "--json",
    ]  # fmt: skip


# -- the phases -----------------------------------------------------------------------------


class Phases:
    """A Rich progress line per phase: a spinner, a bar where the count is known, the time."""

    def __init__(self, console: Console, quiet_share: float) -> None:
        self.quiet_share = quiet_share  # the most other programs may take before a timed run
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )

    def __enter__(self) -> Phases:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, description: str) -> TaskID:
        return self.progress.add_task(description, total=None)

    def moved(self, task: TaskID) -> Callable[[tuple[int, int] | None], None]:
        def update(count: tuple[int, int] | None) -> None:
            if count is not None:
                self.progress.update(task, completed=count[0], total=count[1])

        return update

    def waiting(self, task: TaskID, description: str) -> Callable[[float], None]:
        def update(share: float) -> None:
            text = f"{description} [dim](waiting: others use {share:.0%} of the CPU)[/]"
            self.progress.update(task, description=text)

        return update

    def done(self, task: TaskID, description: str) -> None:
        self.progress.update(task, description=description, total=1, completed=1)


def quiet_then(phases: Phases, task: TaskID, description: str) -> None:
    wait_quiet(phases.waiting(task, description), phases.quiet_share)
    phases.progress.update(task, description=description)


def sweep_batch_sizes(
    phases: Phases,
    work: Path,
    folder: Path,
    subjects: list[str],
    per_subject: int,
    sizes: list[int],
) -> tuple[int, dict[int, Timing]]:
    """lm-eval's wall time at each batch size on a few subjects; the fastest size."""
    env = offline_env(work)
    names = ",".join(TASK_PREFIX + s for s in subjects)
    walls: dict[int, Timing] = {}
    for size in sizes:
        description = f"lm-eval batch size {size} ({len(subjects)} subjects)"
        task = phases.start(description)
        quiet_then(phases, task, description)
        out = work / "sweep" / str(size)
        command = lm_eval_command(folder, work / "tasks", names, per_subject, size, out)
        logs = work / "logs" / f"sweep-{size}"
        poll = lm_eval_progress(logs.with_suffix(".err"))
        walls[size] = timed(command, env, logs, poll, phases.moved(task))
        phases.done(task, f"{description}: {walls[size].wall_s:.0f} s")
    return min(walls, key=lambda s: walls[s].wall_s), walls


def run_lm_eval(
    phases: Phases, work: Path, folder: Path, per_subject: int, batch: int
) -> tuple[Contender, dict[str, str]]:
    description = f"lm-eval, hf backend, batch size {batch}"
    task = phases.start(description)
    quiet_then(phases, task, description)
    out = work / "lm-eval"
    command = lm_eval_command(folder, work / "tasks", GROUP, per_subject, batch, out)
    logs = work / "logs" / "lm-eval"
    timing = timed(
        command, offline_env(work), logs, lm_eval_progress(logs.with_suffix(".err")),
        phases.moved(task),
    )  # fmt: skip
    phases.done(task, f"{description}: {timing.wall_s:.0f} s")
    answers, prompts, reported = read_lm_eval(out)
    shown = (
        f"lm_eval --model hf --model_args pretrained=HF_FOLDER,dtype=float32 --device cpu "
        f"--batch_size {batch} --tasks {GROUP} --include_path TASKS --limit {per_subject} "
        "--output_path OUT --log_samples"
    )
    contender = Contender("lm-eval", "lm-eval hf (float32)", shown, timing, reported, answers)
    return contender, prompts


def run_scheda(
    phases: Phases, work: Path, name: str, label: str, model: str, shown_model: str, n: int
) -> Contender:
    task = phases.start(label)
    quiet_then(phases, task, label)
    data_dir = work / f"scheda-{name}"  # fresh: nothing resumes from an earlier run
    shutil.rmtree(data_dir, ignore_errors=True)
    store = data_dir / "evals.sqlite3"
    env = {**offline_env(work), "SCHEDA_DATA_DIR": str(data_dir)}
    logs = work / "logs" / name
    command = scheda_command(model, work / "mmlu", n)
    timing = timed(command, env, logs, scheda_progress(store), phases.moved(task))
    phases.done(task, f"{label}: {timing.wall_s:.0f} s")
    [summary] = json.loads(logs.with_suffix(".out").read_text())["results"]
    shown = " ".join([*scheda_command(shown_model, Path("DATA"), n)[1:]])
    return Contender(
        name, label, f"scheda {shown}", timing, summary["metrics"]["acc"]["value"],
        read_scheda(store),
    )  # fmt: skip


# -- the comparison -------------------------------------------------------------------------


def compare(mine: Contender, reference: Contender) -> dict[str, Any]:
    """Accuracy difference in points and item by item: picks and log-likelihoods."""
    keys = sorted(set(mine.answers) & set(reference.answers))
    differ = [k for k in keys if mine.answers[k].pred != reference.answers[k].pred]
    gaps = [
        abs(a - b)
        for k in keys
        for a, b in zip(mine.answers[k].logliks, reference.answers[k].logliks, strict=True)
    ]
    return {
        "items_in_common": len(keys),
        "only_here": len(set(mine.answers) - set(reference.answers)),
        "only_in_reference": len(set(reference.answers) - set(mine.answers)),
        "acc_difference_points": 100 * (mine.acc - reference.acc),
        "predictions_differ": len(differ),
        "items_differing": differ[:50],
        "loglik_abs_difference_mean": sum(gaps) / len(gaps) if gaps else None,
        "loglik_abs_difference_max": max(gaps) if gaps else None,
        "speedup": reference.timing.wall_s / mine.timing.wall_s,
    }


def targets(contenders: list[Contender], vs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    items = min(len(c.answers) for c in contenders)
    same_items = vs["hf"]["items_in_common"] == items == vs["gguf"]["items_in_common"]
    rows = []
    for name in ("hf", "gguf"):
        points = vs[name]["acc_difference_points"]
        rows.append(
            {
                "target": f"accuracy, {SHORT[name]}: |scheda − lm-eval| ≤ {TARGET_POINTS} "
                f"points, ≥ {MIN_ITEMS:,} items",
                "measured": f"{points:+.2f} points on {items:,} items",
                "judged": name == "hf",  # the like-for-like run; the GGUF is quantized
                "pass": abs(points) <= TARGET_POINTS and items >= MIN_ITEMS and same_items,
            }
        )
    for name in ("hf", "gguf"):
        speedup = vs[name]["speedup"]
        rows.append(
            {
                "target": f"speed, {SHORT[name]}: ≥ {TARGET_SPEEDUP:g} × lm-eval's",
                "measured": f"{speedup:.2f} ×",
                # Judged on the same folder lm-eval reads. The GGUF's figure is bound by
                # llama.cpp's Q4_1 prompt rate on this CPU, below torch's float32 rate.
                "judged": name == "hf",
                "pass": speedup >= TARGET_SPEEDUP,
            }
        )
    return rows


def figures_table(contenders: list[Contender], vs: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="MMLU 5-shot, the same items", title_justify="left")
    for column in (
        "run",
        "items",
        "acc",
        "vs lm-eval",
        "picks differ",
        "wall",
        "per item",
        "speed",
    ):
        table.add_column(column, justify="left" if column == "run" else "right")
    for c in contenders:
        v = vs.get(c.name)
        table.add_row(
            SHORT[c.name],
            f"{len(c.answers):,}",
            f"{100 * c.acc:.2f}",
            f"{v['acc_difference_points']:+.2f}" if v else "",
            f"{v['predictions_differ']}" if v else "",
            f"{c.timing.wall_s:.1f} s",
            f"{c.timing.wall_s / len(c.answers):.3f} s",
            f"{v['speedup']:.2f} ×" if v else "",
        )
    return table


def targets_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Targets", title_justify="left")
    for column in ("target", "measured", "result"):
        table.add_column(column)
    for r in rows:
        verdict = "[green]PASS[/]" if r["pass"] else "[red]FAIL[/]"
        table.add_row(r["target"], r["measured"], verdict + ("" if r["judged"] else " (info)"))
    return table


def record(c: Contender) -> dict[str, Any]:
    return {
        "label": c.label,
        "command": c.command,
        "items": len(c.answers),
        "acc": c.acc,
        "acc_reported_by_the_tool": c.reported_acc,
        **asdict(c.timing),
        "per_item_s": c.timing.wall_s / len(c.answers),
    }


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MMLU CSV folder")
    parser.add_argument("--per-subject", type=int, default=18, help="test rows per subject")
    parser.add_argument("--subjects", help="comma-separated subjects (default: all)")
    parser.add_argument("--batch-size", type=int, help="lm-eval's batch size (skips the sweep)")
    parser.add_argument("--sweep", default="1,4,8,16", help="lm-eval batch sizes to try")
    parser.add_argument("--sweep-subjects", type=int, default=6, help="subjects the sweep runs")
    parser.add_argument(
        "--quiet-share",
        type=float,
        default=QUIET_SHARE,
        help="the most CPU other programs may use before a timed run starts (0-1)",
    )
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "eval_vs_lm_eval.json")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "eval_vs_lm_eval.png")
    parser.add_argument(
        "--plot", action="store_true", help="only draw --png from the figures in --out"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plot:
        plot(json.loads(args.out.read_text(encoding="utf-8")), args.png)
        print(f"wrote {args.png}")
        return 0
    console = Console()
    work = args.work or Path(tempfile.mkdtemp(prefix="scheda-eval-bench-"))
    for stale in ("mmlu", "tasks", "lm-eval", "sweep", "logs"):
        shutil.rmtree(work / stale, ignore_errors=True)
    subjects_asked = args.subjects.split(",") if args.subjects else None
    with Phases(console, args.quiet_share) as phases:
        task = phases.start("items, lm-eval tasks, the HF folder")
        subjects = build_layout(args.data, work / "mmlu", subjects_asked)
        write_lm_eval_tasks(work / "mmlu", subjects, work / "tasks")
        mine_prompts = scheda_prompts(work / "mmlu", args.per_subject)
        folder = hf_folder(work / "default-hf")
        prepare_lm_eval_datasets(
            work / "tasks", [TASK_PREFIX + s for s in subjects], offline_env(work)
        )
        phases.done(task, f"{len(mine_prompts):,} items in {len(subjects)} subjects; HF folder")
        sweep: dict[int, Timing] = {}
        batch = args.batch_size
        if batch is None:
            sizes = [int(s) for s in args.sweep.split(",")]
            few = subjects[: args.sweep_subjects]
            batch, sweep = sweep_batch_sizes(phases, work, folder, few, args.per_subject, sizes)
        lm_eval, prompts = run_lm_eval(phases, work, folder, args.per_subject, batch)
        hf = run_scheda(
            phases, work, "hf", "scheda eval, HF folder (transformers, float32)",
            str(folder), "HF_FOLDER", args.per_subject,
        )  # fmt: skip
        gguf = run_scheda(
            phases, work, "gguf", "scheda eval default (GGUF Q4_1, llama.cpp)",
            "default", "default", args.per_subject,
        )  # fmt: skip
    # gguf_vs_hf: what the quantization alone changes (its "speedup" is HF wall ÷ GGUF wall).
    vs = {
        "hf": compare(hf, lm_eval),
        "gguf": compare(gguf, lm_eval),
        "gguf_vs_hf": compare(gguf, hf),
    }
    same_prompts = sum(prompts.get(k) == p for k, p in mine_prompts.items())
    rows = targets([lm_eval, hf, gguf], vs)
    console.print(figures_table([lm_eval, hf, gguf], vs))
    console.print(f"prompts identical in both tools: {same_prompts:,} of {len(mine_prompts):,}")
    console.print(targets_table(rows))
    result = {
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "shots": SHOTS,
            "per_subject": args.per_subject,
            "subjects": len(subjects),
            "exemplars": f"first {SHOTS} dev rows per subject (dev = the first {SHOTS} "
            "rows of each test CSV, left out of the scored items)",
            "lm_eval_batch_size": batch,
            "lm_eval_batch_sweep": {str(k): asdict(v) for k, v in sweep.items()},
            "lm_eval_sweep_subjects": len(subjects[: args.sweep_subjects]) if sweep else 0,
            "threads": "library defaults: one per physical core (torch and llama.cpp)",
            "quiet_share": args.quiet_share,
        },
        "prompts_identical": same_prompts,
        "runs": {c.name: record(c) for c in (lm_eval, hf, gguf)},
        "comparisons": vs,
        "targets": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    plot(result, args.png)
    console.print(f"wrote {args.out} and {args.png}")
    return 0 if all(r["pass"] for r in rows if r["judged"]) else 1


def plot(report: dict[str, Any], png: Path) -> None:
    """Wall time per run, each bar labelled with its accuracy and its speed-up."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    runs = report["runs"]
    names = [n for n in ("lm-eval", "hf", "gguf") if n in runs]
    labels = {
        "lm-eval": "lm-eval, hf backend\n(HF folder, float32)",
        "hf": "scheda eval\n(HF folder, float32)",
        "gguf": "scheda eval\n(GGUF Q4_1, llama.cpp)",
    }
    walls = [runs[n]["wall_s"] / 60 for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=120)
    bars = ax.barh(
        [labels[n] for n in names], walls, color=["#9e9e9e", "#2e7d32", "#1565c0"][: len(names)]
    )
    ax.invert_yaxis()
    reference = runs["lm-eval"]["wall_s"]
    for bar, name in zip(bars, names, strict=True):
        run = runs[name]
        text = f"  {run['wall_s'] / 60:.1f} min · acc {100 * run['acc']:.2f}%"
        if name != "lm-eval":
            text += f" · {reference / run['wall_s']:.1f}× faster"
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, text, va="center")
    ax.set_xlim(0, max(walls) * 1.6)
    ax.set_xlabel("wall time, minutes (start to exit, model load included)")
    items, cores = runs["lm-eval"]["items"], report["machine"]["cores"]
    ax.set_title(f"MMLU 5-shot, the same {items:,} items, on {cores} CPU cores")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
