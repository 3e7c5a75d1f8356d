"""The known-answer benchmark: does distillation make a better extractor, on patients whose truth is known?

    python experiments/known_answer.py --engine vllm                     # the arms of experiments/RESULTS.md (one GPU)
    python experiments/known_answer.py --arms reference:25,reference:300,self:25 --parallel 3   # side by side
    python experiments/known_answer.py --arms self:300 --engine vllm --keep_earlier True
    python experiments/known_answer.py --corpus data/known-answer-final --split final --patients 1200 \
        --annotated_notes 120 --n2c2_test 120 --apixaban_notes 96 --grid 30,100,300 --engine vllm \
        --parallel 3                                         # the analysis plan's grid (docs/known_answer.md)

Writes a simulated corpus (python -m simulation.corpus) once, then runs `run-pipeline.py --config
configs/known-answer.yaml` once per arm, an arm being a teacher and a number of notes: `reference`
(the fact-sheet writer), `reference@P` (the same, each answer wrong with chance 1 - P), `text-only` (rules
that read the note alone, teachers/) or `self` (the student's own base model as teacher, --self_teacher), and
`:filtered` for the same teacher's items through every stage B filter (quote in the note, answer type,
duplicates, near-duplicates). A filtered arm reuses its unfiltered twin's teacher replies, and the twin
then trains on as many items as the filtered arm kept (stage C's per_type: the filtered arm's items shared out
over every question type, since the filters can empty a type), so the two differ in which items they train
on, not in how many:

    python experiments/known_answer.py --arms self:100:filtered,self:100 --engine vllm

Every arm
trains the same student on its teacher's items and scores it and its base on the corpus's held-out
patients (annotated questions, n2c2 XML, apixaban criteria). The first arm makes the base model's
answers, which the later arms reuse (the next ones train beside it); those run `--parallel` at a time on
the same GPU (a 135M student leaves most of it idle; their vLLM engines share 60% of its memory, each sizing
its KV cache up front; about 21 GiB per training run, so 3 at most on an 80 GB card), each logging to
arms/{teacher}-{notes}/bench.log,
each arm's seconds recorded with the number of arms that could run at once.
Into a log of earlier records (the final split, --keep_earlier) each arm is logged as it finishes (a grid
stopped midway keeps those). Rerunning resumes: the driver skips what is done. With --keep_earlier True,
the records of arms measured earlier on the same corpus by the same reference teacher (in --output, arms
not run now) are kept, so a learning curve can grow over runs; results measured otherwise are kept whole
under `superseded`. Every arm's record says its run (date, card, command, code: the commit measured) and
config digest; the file says its reference teacher's digest: a digest of its behaviour (its replies about a
small corpus of fixed seed, simulation.reference_teacher.behaviour_digest), so that code moved or reworded
keeps earlier arms comparable.
`python bench/results.py` writes experiments/RESULTS.md from the file.

An arm may add `:permuted` (stage C's answers permuted within each question type: the format-only fine-tune) and
`:seedN` (stage C's sampling and the training run; --seeds 1,2,3 gives every arm without one each seed).
--baselines rules,few-shot answers the first arm's prompts with the text-only rules and with the base model
reading worked examples from the first arm's training set, on the base's own answering settings. --grid
N1,N2,N3 runs the analysis plan's arms and both baselines, the first arm (the reference teacher at the largest
size, seed 1) before the others. Every arm and baseline is compared with the base on the same patients (a
paired patient-level bootstrap, experiments/known_answer_stats.py), per seed and over seeds, with a per-criterion
table. On the final split (--split final) the results are a log, bench/known_answer.json: nothing is replaced,
an arm whose answers are already logged is not logged again, and a rerun that answers otherwise is a new record;
`python bench/results.py` writes its tables into bench/RESULTS.md and the script draws the two curves beside it.

Results go to experiments/known_answer.json (dev split): one record per arm, task and model (balanced accuracy with its
95% interval, over questions or, for annotated-synthetic, over examples; micro-F1; the official n2c2
micro-F1; accuracy per question type), the teacher's precision against the truth per question type,
and each arm's seconds per stage.

Beside this script: known_answer_arms.py (what an arm is, the grid, the commands that run arms and baselines),
known_answer_results.py (the records collected from the arms' files, the results file kept across runs, the
tables) and known_answer_stats.py (the paired comparisons and the curves).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from clinical_distil import layout
from clinical_distil.cli import run
from clinical_distil.files import InputError, write_text
from clinical_distil.provenance import provenance
from simulation import reference_teacher
from simulation.corpus import CORPUS_FILE, write_corpus

import known_answer_stats as stats  # experiments/: scripts beside each other
from known_answer_arms import (Arm, comparison_partners, grid_arms, known_teacher, n2c2_commands, n2c2_folders,
                               parse_arms, parse_seeds, parse_sizes, run_arms, run_commands)
from known_answer_results import (check_same_log, collect, collect_n2c2, corpus_summary, earlier_results,
                                  keep_earlier_arms, latest_paired, markdown, paired_markdown, precision_markdown)


def main(config: str = "configs/known-answer.yaml", corpus: str = "data/known-answer",
         arms: str = "reference:500,reference:100,self:100", patients: int = 1200,
         seed: int = 7,
         annotated_notes: int = 60, n2c2_test: int = 60, apixaban_notes: int = 48,
         self_teacher: str = "models/SmolLM2-135M-Instruct", output: str = "",
         parallel: int = 1, collect_only: bool = False, keep_earlier: bool = False, engine: str = "",
         split: str = "", seeds: str | tuple = "", grid: str | tuple = "", precision: float = 0.8,
         baselines: str | tuple = "", resamples: int = 2000, n2c2_dir: str | tuple = "") -> None:
    """Run the arms (resuming; after the first, `parallel` at a time, each logging to its arm's folder) and the
    baselines, then write the results JSON (with --keep_earlier, also the other arms already in it) and print the
    tables. --engine auto, vllm or transformers overrides the config's engine for stage A and the answers; --split
    the held-out patients' split of a corpus written now (dev, the default, or final for the analysis plan's runs,
    logged in bench/known_answer.json); --seeds runs each arm once per seed; --grid N1,N2,N3 runs the analysis
    plan's grid at those teacher note counts (--arms is then not read); --baselines rules,few-shot; --n2c2_dir
    (repeatable) an n2c2-format folder of labelled XML files that the base and every student answer too, scored
    as a task of its own with the official micro-F1."""
    corpus_dir, config_path = layout.resolve(corpus), layout.resolve(config)
    chosen = grid_arms(parse_sizes(grid), f"{float(precision):g}", tuple(parse_seeds(seeds) or (1, 2, 3))) \
        if grid else parse_arms(arms, seeds)
    wanted = [str(part).strip() for part in (baselines if isinstance(baselines, (tuple, list)) else
                                             str(baselines).split(",")) if str(part).strip()] if baselines else []
    if grid and not baselines:
        wanted = list(stats.BASELINES)
    if set(wanted) - set(stats.BASELINES) or len(set(wanted)) < len(wanted):
        raise InputError(f"--baselines takes {', '.join(stats.BASELINES)}, each once; got {baselines!r}")
    if "few-shot" in wanted and chosen[0].permuted:
        raise InputError(f"the few-shot baseline reads worked examples from the first arm's training set, and "
                         f"{chosen[0].label} trains on permuted answers; put an arm of answers as written first")
    if grid and not known_teacher(f"reference@{float(precision):g}"):
        raise InputError(f"--precision must be in (0, 1], got {precision!r}")
    if not config_path.exists():
        raise InputError(f"config file not found: {config_path}")
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        raise InputError(f"--parallel must be a whole number of arms at a time, at least 1; got {parallel!r}")
    if engine not in ("", "auto", "vllm", "transformers"):
        raise InputError(f"--engine must be auto, vllm or transformers, got {engine!r}")
    if max(arm.notes for arm in chosen) > patients:
        raise InputError(f"an arm asks for more notes than the corpus has patients ({patients}); raise --patients")
    extra_n2c2 = n2c2_folders(n2c2_dir)
    if split not in ("", "dev", "final"):
        raise InputError(f"--split must be dev or final, got {split!r}")
    # a corpus written before splits existed holds the dev split's patients
    written = corpus_summary(corpus_dir).get("split", "dev") if (corpus_dir / CORPUS_FILE).exists() else None
    if split and written and split != written:
        raise InputError(f"{corpus_dir} holds the {written} split's held-out patients, not {split}'s; give another "
                         "--corpus")
    final = (split or written) == "final"
    target = layout.resolve(output or ("bench/known_answer.json" if final else "experiments/known_answer.json"))
    started = time.time()
    if keep_earlier or final:  # an unreadable file is found before any arm runs
        earlier_results(target)
    if not collect_only:
        if not written:
            write_corpus(corpus_dir, patients=patients, seed=seed, annotated_notes=annotated_notes,
                         n2c2_test=n2c2_test, apixaban_notes=apixaban_notes, split=split or "dev")
        if final:  # before any arm runs: the log is of this corpus and reference teacher
            check_same_log(earlier_results(target), {"corpus": corpus_summary(corpus_dir),
                                                     "reference_teacher": reference_teacher.behaviour_digest()}, target)
        done: list[Arm] = []

        def finished(arm: Arm) -> None:
            """Log the arm that finished (with the finished arms its student is compared with: its format-only
            twin, the reference teacher's arm of its size and seed; the first arm with the baselines), so that a
            grid stopped midway keeps what it finished. Only into a log of earlier records: a results file written
            whole would be cut down to the arms done so far."""
            done.append(arm)
            partners = comparison_partners(arm, done)
            logged = [each for each in chosen if each == arm or each in partners]
            write_results(target, corpus_dir, config, logged, wanted if chosen[0] in logged else [], resamples,
                          extra_n2c2, started, keep_earlier=True)

        run_arms(config_path, corpus_dir, chosen, self_teacher, engine or None, parallel, wanted,
                 on_done=finished if keep_earlier or final else None)
        run_commands(n2c2_commands(config_path, corpus_dir, chosen, self_teacher, engine or None, extra_n2c2), 1)
    results = write_results(target, corpus_dir, config, chosen, wanted, resamples, extra_n2c2, started,
                            keep_earlier or final)
    if final or grid:
        figures = stats.write_figures(latest_paired(results.get("paired", [])), target.parent, target.stem)
        print("figures: " + (", ".join(str(path) for path in figures) or "none yet (a curve needs two points)"))
    print(markdown(results))
    print()
    print(paired_markdown(results))
    print()
    print(precision_markdown(results))


def write_results(target: Path, corpus_dir: Path, config: str, arms: list[Arm], baselines: list[str],
                  resamples: int, extra_n2c2: list[Path], started: float, keep_earlier: bool) -> dict:
    """Collect `arms` (the first with the baselines) into the results JSON at `target`, beside its earlier
    records where `keep_earlier` (always on the final split's log); returns what was written."""
    config_path = layout.resolve(config)
    # every arm's record says its run (date, card, command, code): the results pages name it per row
    run_record = {**provenance("experiments/known_answer.py"), "split": corpus_summary(corpus_dir).get("split")}
    digest = hashlib.sha256(config_path.read_bytes()).hexdigest()[:12]
    results = {**run_record, "config": str(config), "corpus": corpus_summary(corpus_dir),
               "reference_teacher": reference_teacher.behaviour_digest(),
               "seconds": round(time.time() - started, 1), **collect(corpus_dir, arms, tuple(baselines), resamples)}
    results["arm_seconds"] = [{**run_record, "config_digest": digest, **arm} for arm in results["arm_seconds"]]
    n2c2_runs, n2c2_paired = collect_n2c2(corpus_dir, arms, extra_n2c2, resamples)
    results["runs"] += n2c2_runs
    if n2c2_paired:
        results["paired"] = results.get("paired", []) + n2c2_paired
        results["over_seeds"] = stats.mean_over_seeds(results["paired"])
    for key in ("paired", "per_criterion"):
        results[key] = [{**run_record, **record} for record in results.get(key, [])]
    if keep_earlier:
        results = keep_earlier_arms(results, target, arms)
    write_text(json.dumps(results, indent=1) + "\n", target)
    return results


def joined_repeats(argv: list[str], flag: str) -> list[str]:
    """`argv` with every `--flag VALUE` (or `--flag=VALUE`) given once, their values joined by commas."""
    values, kept, index = [], [], 0
    while index < len(argv):
        word = argv[index]
        if word == f"--{flag}" and index + 1 < len(argv):
            values.append(argv[index + 1])
            index += 2
            continue
        if word.startswith(f"--{flag}="):
            values.append(word.split("=", 1)[1])
        else:
            kept.append(word)
        index += 1
    return kept + ([f"--{flag}", ",".join(values)] if values else [])


if __name__ == "__main__":
    sys.argv[1:] = joined_repeats(sys.argv[1:], "n2c2_dir")
    run(main)

