"""A sweep: a prepared run's teacher, the trials it still lacks, and those trials through the chosen executor."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dataclasses
import itertools
import shlex

from rich.markup import escape

from effrank_bench.config import EXECUTOR_OPTIONS, RunConfig, flag_args, flag_name
from effrank_bench.errors import RegistrationError
from effrank_bench.factorize import qkv_in_effect
from effrank_bench.lock import run_lock
from effrank_bench.plan import (failed_ranks, measured_curve, plan_trials, rounds_to_resume, searcher,
                                unfinished_trials)
from effrank_bench.progress import NullProgress, Progress
from effrank_bench.records import TeacherRecord, Trial, TrialRecord
from effrank_bench.registry import Registry
from effrank_bench.search import AdaptiveSearch, GridSearch, parse_tolerance
from effrank_bench.setup import RunSetup, prepare
from effrank_bench.store import TIMING_OPTIONS, RunDir
from effrank_bench.teacher import Teacher, obtain_teacher
from effrank_bench.teacher_spectrum import obtain_spectrum


@dataclass(frozen=True)
class Execution:
    """What an executor is handed: the prepared run, its teacher, the trials left, where records go."""

    setup: RunSetup
    teacher: Teacher
    trials: tuple[Trial, ...]
    record: Callable[[TrialRecord], None]
    progress: Progress


def execute(setup: RunSetup, progress: Progress = NullProgress(), teacher: Teacher | None = None) -> RunDir:
    """Run every trial of ``setup`` not yet recorded; each record is appended the moment it arrives.

    This process is the only writer of the run directory, whichever executor runs the trials, and
    records each trial once. ``teacher``: the run's teacher when it was obtained before (a suite
    obtains its teachers first).
    """
    with run_lock(setup.run.path, progress):  # one process at a time writes a run directory
        given = setup.config
        before = RunDir(setup.run.path)
        held = before.config() if before.config_path.is_file() else None  # what it held (open checks the rest)
        run = RunDir.open(setup.run.path, given)
        config = run.config()  # with the ranks and seeds of earlier commands: the sweep its report reads
        if config.search != given.search:  # this command named none: it goes on with the directory's
            progress.note(f"{run.path} holds an adaptive search (--tolerance {held.tolerance or '10%'}): this "
                          "command goes on with it (--search grid trains every rank of --ranks)")
        if (held is not None and held.search == config.search == "adaptive"
                and parse_tolerance(held.tolerance) != parse_tolerance(config.tolerance)):
            progress.note(f"{run.path}: its adaptive search goes on at --tolerance {config.tolerance or '10%'}, where "
                          f"it ran at {held.tolerance or '10%'} (its rounds before keep the ranks they asked for)")
        timing = [name for name in TIMING_OPTIONS if getattr(given, name) != getattr(config, name)]
        if timing:  # kept from the directory (RunDir.resumed), whose recorded students were timed so
            kept, asked = (", ".join(shlex.join(flag_args(name, getattr(c, name))) for name in timing)
                           for c in (config, given))
            progress.note(f"[yellow]{run.path} times its students as it timed the ones it holds ({kept}), so its "
                          f"cost table holds one kind of latency: {asked} applies to another --out")
        if qkv_in_effect(setup.sites, config.qkv) != config.qkv:  # --qkv keys the directory
            progress.note(f"[yellow]--qkv fused: the {config.target} target of {config.arch} has no fused projection, "
                          "so its students are those of --qkv split")
        unused = [flag_name(name) for name in EXECUTOR_OPTIONS
                  if name not in setup.parts.executor.options
                  and getattr(config, name) != RunConfig.model_fields[name].default]
        if unused:
            progress.note(f"[yellow]{', '.join(unused)}: the {config.executor} executor does not read "
                          f"{'it' if len(unused) == 1 else 'them'}")
        if config != given:  # what the executors (and the teacher's SVD) see
            setup = dataclasses.replace(setup, config=config)
        run.store_target(setup.target_info())
        if teacher is None and (recorded := finished_teacher(setup)) is not None:
            progress.note(f"teacher, {recorded.origin}: test accuracy {recorded.test_accuracy:.4f}")
            progress.note(f"{run.path}: every trial of this sweep is recorded, nothing to train")
            return run
        if teacher is None:
            (teacher,) = obtain_teachers([setup], progress)
        run.store_teacher(teacher.weights, teacher.record)
        stored = run.spectrum()
        if config.spectrum_samples and (stored is None or stored.key != teacher.record.key):  # once per teacher
            run.store_spectrum(obtain_spectrum(setup, teacher, config.spectrum_samples, progress))
        progress.note(f"teacher, {teacher.record.origin}: test accuracy {teacher.record.test_accuracy:.4f}")
        if config.search == "grid" and config.tolerance is not None:
            progress.note("[yellow]--tolerance applies to --search adaptive: this grid sweep trains every rank")
        recorded = run.records()
        done = {record.trial for record in recorded}
        if done:
            progress.note(f"resuming {run.path}: {len(done)} trial(s) already recorded")
        earlier = [f"{what} {', '.join(map(str, sorted(set(held) - set(typed))))}" for what, held, typed in
                   (("rank(s)", config.ranks, given.ranks), ("seed(s)", config.seeds, given.seeds))
                   if set(held) - set(typed)]
        if earlier:
            progress.note(f"{run.path} holds {' and '.join(earlier)} of an earlier command: they are part of its "
                          "sweep (another --out for a sweep without them)")

        def record(result: TrialRecord) -> None:
            # Once per trial, whatever hands it over twice: a group resumed from a checkpoint saved before
            # 2026-11-27 holds students that failed after it, recorded then at once; a retried cluster task
            # returns its whole group.
            if result.trial in done:
                return
            done.add(result.trial)
            run.append(result)
            label = result.trial.label(len(config.seeds))
            if result.status == "failed":
                progress.note(f"[red]{label} failed: {escape(result.error or '')}")
            else:
                progress.note(f"{label}: test accuracy {result.test_accuracy:.4f}")
            advance(1)

        # Rounds the search asked for before are trained to the end first (a round cut short and refitted
        # would ask for other ranks than an uninterrupted sweep), then the search is asked for more.
        asked, spent = run.search_log()
        search = searcher(config, spent)
        asked = _resumed_rounds(run, asked, spent, search, recorded, config.seeds, progress)
        for round_ in itertools.count(1):
            records = run.records()
            replayed = round_ <= len(asked)
            if replayed:
                ranks = asked[round_ - 1]
            else:
                measured = measured_curve(records, config.seeds, teacher.record.test_accuracy)
                failed = failed_ranks(records, config.seeds)
                ranks = search.next_ranks(measured, failed)
            trials = plan_trials(config, {r.trial for r in records}, ranks)
            if not replayed:
                if not trials:  # nothing (more) asked for, or only what is recorded (a teacher at 0: no curve)
                    _note_left_open(search, measured, failed, progress)
                    break
                asked.append(list(ranks))
                spent += isinstance(search, AdaptiveSearch)
                run.store_search_rounds(asked, spent)
            if trials:
                with progress.task("sweep" if config.search == "grid" else f"search round {round_}",
                                   total=len(trials)) as advance:
                    setup.parts.executor.execute(Execution(setup, teacher, tuple(trials), record, progress))
                if not done & set(trials):  # asked again, it would again train nothing: never finish
                    raise RegistrationError(f"executor '{config.executor}' returned without recording any of the "
                                            f"{len(trials)} trial(s) it was handed")
        return run


def _resumed_rounds(run: RunDir, asked: list[list[int]], spent: int, search: GridSearch | AdaptiveSearch,
                    records: list[TrialRecord], seeds: tuple[int, ...], progress: Progress) -> list[list[int]]:
    """The rounds asked before (``asked``, ``spent`` of them adaptive) that this sweep finishes first
    (:func:`~effrank_bench.plan.rounds_to_resume`); ranks dropped from them (asked under another --ranks,
    --search or --tolerance) are named, and the search's log rewritten without them."""
    resumed = rounds_to_resume(asked, search, records, seeds)
    if resumed != asked:
        dropped = sorted({r for round_ in asked for r in round_} - {r for round_ in resumed for r in round_})
        if dropped:
            progress.note(f"rank(s) {', '.join(map(str, dropped))}, asked for before, are not among the ranks "
                          "this search trains (--ranks, --search, --tolerance): they will not train (further)")
        run.store_search_rounds(resumed, spent)
    return resumed


def _note_left_open(search: GridSearch | AdaptiveSearch, measured: dict[int, float], failed: set[int],
                    progress: Progress) -> None:
    """Say so where an adaptive search's round budget, not its tolerance, ended it."""
    if isinstance(search, AdaptiveSearch) and (left := search.left_open(measured, failed)):
        looser = "a looser --tolerance" + ("" if search.tolerance.on_grid else " (or --tolerance grid)")
        progress.note(f"[yellow]the search stopped at its budget of {search.max_rounds} rounds (this run "
                      f"directory's: earlier commands' adaptive rounds count) with {'; '.join(left)}: {looser} "
                      "brackets it in fewer")


def finished_teacher(setup: RunSetup) -> TeacherRecord | None:
    """The teacher record a finished sweep keeps, or None where the sweep still needs its teacher.

    Finished: the run directory holds this run's teacher (same key) and, where asked for, its spectrum, and
    the same command would train no trial (:func:`~effrank_bench.plan.unfinished_trials`). Run again, such a
    sweep only reports: its teacher is neither loaded nor measured again (its latency cell stays as the
    sweep measured it) and no executor starts (a cluster).
    """
    run = RunDir(setup.run.path)
    config = run.resumed(setup.config)
    if config is None or not run.teacher_info.is_file():
        return None
    record = run.teacher()
    if record.key != setup.teacher_key:
        return None
    if config.spectrum_samples and ((stored := run.spectrum()) is None or stored.key != record.key):
        return None
    if unfinished_trials(config, run.records(), *run.search_log(), record.test_accuracy):
        return None
    return record


def obtain_teachers(setups: Sequence[RunSetup], progress: Progress = NullProgress()) -> list[Teacher]:
    """The runs' teachers, in order: each run's executor obtains those of its runs together (a cluster, in
    tasks side by side) when it has ``obtain_teachers``; the others are obtained in this process, one by one."""
    teachers: dict[int, Teacher] = {}
    executors = {setup.parts.executor.name: setup.parts.executor for setup in setups}
    for executor in executors.values():
        mine = [i for i, setup in enumerate(setups) if setup.parts.executor.name == executor.name]
        if executor.obtain_teachers is None:
            teachers |= {i: obtain_teacher(setups[i], progress) for i in mine}
        else:
            teachers |= dict(zip(mine, executor.obtain_teachers([setups[i] for i in mine], progress)))
    return [teachers[i] for i in range(len(setups))]


def run_sweep(config: RunConfig, registry: Registry | None = None, progress: Progress = NullProgress()) -> RunDir:
    """Prepare ``config`` and execute it: the library's one call for a whole sweep."""
    return execute(prepare(config, registry), progress)
