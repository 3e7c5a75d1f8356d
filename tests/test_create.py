"""Stage A (synthetic-a-create.py) and the transformers engine on CPU."""

import json

import pandas as pd
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from clinical_distil import layout, prompts
from clinical_distil.chat import FittedPrompt, end_token_ids, fit_note, fit_notes, render_ids, render_ids_batch
from clinical_distil.engines import Generation, Sampling
from clinical_distil.hf_engine import TransformersEngine
from clinical_distil.files import write_csv
from clinical_distil.select import select_notes
from clinical_distil.runner import RETRY_SEED_STRIDE, retry_failed
from clinical_distil.create import OUTPUT_COLUMNS, CreateRun, read_chunks
from clinical_distil.files import InputError
from clinical_distil.stages import CreateSettings

from conftest import SAMPLES, holds_lock, kill_when, manifest_records, run_script, start_script, wait_for

SCRIPT = "a-generate-synthetic-training-data/synthetic-a-create.py"
TYPES = list(prompts.QUESTION_TYPES)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    notes = select_notes(SAMPLES / "mimic-iii" / "NOTEEVENTS.csv.gz", 6, seed=5)
    write_csv(notes, root / "mimic" / "notes_6.csv.gz")
    return root


def create(data_dir, output_dir, model, *extra):
    return run_script(SCRIPT, "--model_id", str(model), "--dataset", "6", "--data_dir", str(data_dir),
                      "--output_dir", str(output_dir), "--engine", "transformers", *extra)


# ---------------------------------------------------------------- engine

def test_end_tokens_come_from_the_model(default_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)

    class Config:
        eos_token_id = [7, 2]

    assert end_token_ids(tokenizer, Config()) == [2, 7]
    assert end_token_ids(tokenizer, None) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_engine_returns_results_in_input_order(tiny_model_dir):
    engine = TransformersEngine(str(tiny_model_dir), batch_size=2)
    conversations = [[{"role": "user", "content": "word " * length}] for length in (3, 40, 1, 17, 9)]
    results = engine.generate(conversations, Sampling(max_tokens=5))
    assert [result.prompt_tokens for result in results] == [len(render_ids(engine.tokenizer, c)) for c in conversations]
    assert all(result.finish_reason in ("stop", "length") and 1 <= result.output_tokens <= 5 for result in results)
    # ids the caller rendered already (fit_notes) are sent as they are: the same replies
    rendered = render_ids_batch(engine.tokenizer, conversations)
    assert engine.generate(conversations, Sampling(max_tokens=5), prompt_ids=rendered) == results
    with pytest.raises(ValueError, match="4 token id lists for 5 conversations"):
        engine.generate(conversations, Sampling(max_tokens=5), prompt_ids=rendered[:4])


def test_greedy_replies_do_not_depend_on_batching(default_model_dir):
    """The same replies, text for text, whether prompts of different lengths are decoded one by one or together."""
    conversations = [[{"role": "user", "content": question}] for question in (
        "Name a primary color.", "What is 2 + 2? Answer with a number.", "Say hello in French.",
        "Which organ pumps blood through the body?", "Name a day of the week.")]
    replies = {batch_size: [result.text for result in TransformersEngine(str(default_model_dir), batch_size=batch_size)
                            .generate(conversations, Sampling(max_tokens=12))] for batch_size in (1, 2, 5)}
    assert replies[1] == replies[2] == replies[5]
    assert len(set(replies[1])) == 5  # five different replies: the comparison is not of five equal strings


def test_engine_greedy_matches_plain_generate(default_model_dir):
    """Prefix reuse, padded batched decoding and native-GQA attention change no token."""
    import torch

    engine = TransformersEngine(str(default_model_dir), batch_size=4)
    system = {"role": "system", "content": "You answer in one short sentence."}
    conversations = [[system, {"role": "user", "content": "What is the capital of France?"}],
                     [system, {"role": "user", "content": "What is the capital of France? Answer in one word."}],
                     [{"role": "user", "content": "Name three primary colors. Be brief."}]]
    results = engine.generate(conversations, Sampling(max_tokens=24))
    plain = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32)
    for conversation, result in zip(conversations, results):
        ids = torch.tensor([render_ids(engine.tokenizer, conversation)])
        output = plain.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False)
        assert result.text == engine.tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in results[0].text and results[0].finish_reason == "stop"


def test_sampling_is_reproducible_for_a_seed(tiny_model_dir):
    engine = TransformersEngine(str(tiny_model_dir), batch_size=3)
    conversations = [[{"role": "user", "content": f"note {index}"}] for index in range(3)]
    first = engine.generate(conversations, Sampling(max_tokens=12, temperature=0.9, top_p=0.9, seed=11))
    second = engine.generate(conversations, Sampling(max_tokens=12, temperature=0.9, top_p=0.9, seed=11))
    other = engine.generate(conversations, Sampling(max_tokens=12, temperature=0.9, top_p=0.9, seed=12))
    assert [result.text for result in first] == [result.text for result in second]
    assert [result.text for result in first] != [result.text for result in other]


def test_frequency_penalty_stops_repeats(tiny_model_dir, monkeypatch):
    """A penalty far above the logits' range leaves no token used twice; without it the random model repeats."""
    chosen_rows: list[list[int]] = []
    pick = TransformersEngine._pick

    def recording_pick(logits, sampling, generator):
        chosen = pick(logits, sampling, generator)
        chosen_rows.append(chosen.tolist())
        return chosen

    monkeypatch.setattr(TransformersEngine, "_pick", staticmethod(recording_pick))
    engine = TransformersEngine(str(tiny_model_dir), batch_size=2)
    conversations = [[{"role": "user", "content": "note one"}], [{"role": "user", "content": "note two"}]]

    def first_row_tokens(sampling: Sampling) -> list[int]:
        chosen_rows.clear()
        results = engine.generate(conversations, sampling)
        assert [result.output_tokens for result in results] == [40, 40]  # no stop token: steps == rows' lengths
        return [step[0] for step in chosen_rows]

    plain = first_row_tokens(Sampling(max_tokens=40))
    assert len(set(plain)) < len(plain)
    penalised = first_row_tokens(Sampling(max_tokens=40, frequency_penalty=1e4))
    assert len(set(penalised)) == len(penalised) == 40


def test_fit_note_shortens_only_the_note(default_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    note = "Pertinent Results:\n" + "\n".join(f"Creat-{index / 10:.1f} on day {index}" for index in range(600))
    messages = prompts.generation_messages(note, "numeric")
    fitted = fit_note(tokenizer, messages, note, 1500)
    assert fitted.note_truncated and fitted.note_tokens_dropped > 0
    assert len(render_ids(tokenizer, fitted.messages)) <= 1500
    assert fitted.messages[0] == messages[0]  # system message intact
    request = messages[1]["content"].split("</note>")[1]
    assert fitted.messages[1]["content"].endswith(request)  # instructions and request intact
    assert "note shortened" in fitted.messages[1]["content"]
    assert "Creat-0.0 on day 0" in fitted.messages[1]["content"] and "on day 599" in fitted.messages[1]["content"]
    untouched = fit_note(tokenizer, messages, note, 100000)
    assert not untouched.note_truncated and untouched.messages == messages



def test_batched_rendering_and_fitting_match_one_by_one(default_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    long_note = "Pertinent Results:\n" + "\n".join(f"Creat-{index / 10:.1f} on day {index}" for index in range(600))
    short_note = "Brief Hospital Course: admitted with chest pain, troponin negative, discharged home."
    requests = [(prompts.generation_messages(long_note, "numeric"), long_note),
                (prompts.generation_messages(short_note, "yes_no"), short_note),
                ([{"role": "user", "content": "A question of my own, without a note. " * 200}], None)]
    conversations = [messages for messages, _ in requests]
    assert render_ids_batch(tokenizer, conversations) == [render_ids(tokenizer, messages) for messages in conversations]
    # the same ids as the tokenizer's own chat-template encoding
    templated = [tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
                 for messages in conversations]
    assert [render_ids(tokenizer, messages) for messages in conversations] == [
        list(ids["input_ids"] if hasattr(ids, "keys") else ids) for ids in templated]
    assert render_ids_batch(tokenizer, []) == []
    fitted = fit_notes(tokenizer, requests, 1500)
    assert fitted[0] == fit_note(tokenizer, *requests[0], 1500) and fitted[0].note_truncated
    # each carries the ids of what it will send, so the engine need not render it again
    assert [item.prompt_ids for item in fitted] == [render_ids(tokenizer, item.messages) for item in fitted]
    assert [item.prompt_text for item in fitted] == [
        tokenizer.apply_chat_template(item.messages, add_generation_prompt=True, tokenize=False) for item in fitted]
    assert fitted[1].messages == requests[1][0] and not fitted[1].note_truncated
    # no note to shorten: sent as it is, even when longer than the limit
    assert fitted[2].messages == requests[2][0] and len(render_ids(tokenizer, fitted[2].messages)) > 1500

# ---------------------------------------------------------------- stage A end to end (SmolLM2)

@pytest.fixture(scope="module")
def smol_run(data_dir, default_model_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("stage_a")
    result = create(data_dir, output_dir, default_model_dir, "--limit", "2", "--chunk_size", "1",
                    "--questions_per_type", "1", "--max_tokens", "320", "--structured_output", "--temperature", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


def test_two_notes_four_types_files_columns_alignment_manifest(smol_run, data_dir):
    notes = pd.read_csv(data_dir / "mimic" / "notes_6.csv.gz")
    names = sorted(path.name for path in smol_run.glob("df_*.csv"))
    assert names == sorted(f"df_{question_type}_{start}_{start + 1}.csv" for question_type in TYPES for start in (0, 1))
    for start in (0, 1):
        note = notes.iloc[start]
        for question_type in TYPES:
            frame = pd.read_csv(smol_run / f"df_{question_type}_{start}_{start + 1}.csv")
            assert list(frame.columns) == OUTPUT_COLUMNS and len(frame) == 1
            row = frame.iloc[0]
            # each output row belongs to its own note and type
            assert row["note_id"] == note["note_id"] and row["hadm_id"] == note["hadm_id"]
            assert row["question_type"] == question_type
            assert note["text"] in row["prompt"]
            assert prompts.generation_messages(note["text"], question_type, 1)[1]["content"] in row["prompt"]
            assert row["model_id"].endswith("SmolLM2-135M-Instruct")
            assert row["prompt_tokens"] > 500 and row["output_tokens"] > 0
            assert not row["note_truncated"]
    manifest = json.loads((smol_run / "manifest.json").read_text())
    assert manifest["engine"] == "transformers" and manifest["counts"]["requests"] == 8
    assert manifest["counts"]["written_files"] == 8 and manifest["question_types"] == TYPES
    assert manifest["sampling"]["temperature"] == 0 and manifest["structured_output"] is True
    assert manifest["retries"] == {"max": 2, "temperature": 0.7, "frequency_penalty": 0.5}
    assert "transformers" in manifest["versions"] and manifest["output_tokens_per_second"] > 0
    # where the time went: the engine's share and the stage's own, within the run's wall time
    phases = manifest["phase_seconds"]
    assert set(phases) == {"prompts", "generate", "write"} and phases["generate"] > 0
    assert sum(phases.values()) <= manifest["wall_seconds"] + 0.05


def test_structured_output_parses_with_required_keys(smol_run):
    frames = pd.concat([pd.read_csv(path) for path in smol_run.glob("df_*.csv")])
    assert len(frames) == 8
    items_written = 0
    for output, finish_reason, question_type in zip(frames["output"], frames["finish_reason"], frames["question_type"]):
        assert finish_reason == "stop", output
        items = json.loads(output)
        assert isinstance(items, list)
        assert len(items) <= prompts.max_questions(question_type, 1)
        for item in items:
            assert set(item) == set(prompts.ITEM_KEYS)
            assert 1 <= item["difficulty"] <= 10
        items_written += len(items)
    assert items_written > 0  # the per-item checks above ran on real items


# ---------------------------------------------------------------- retries

class ScriptedEngine:
    """Answers each generate call from a script of replies keyed by prompt id, and records the calls."""

    def __init__(self, replies_per_call: list[dict[int, tuple[str, str]]]):
        self.replies_per_call = replies_per_call
        self.calls: list[tuple[list[int], Sampling]] = []

    def generate(self, conversations, sampling, progress=None, prompt_ids=None):
        keys = [ids[0] for ids in prompt_ids]
        self.calls.append((keys, sampling))
        replies = self.replies_per_call[len(self.calls) - 1]
        return [Generation(replies[key][0], replies[key][1], 1, len(replies[key][0])) for key in keys]


GOOD = json.dumps([{key: 1 if key == "difficulty" else "x" for key in prompts.ITEM_KEYS}])


def test_retries_redo_only_failed_replies_with_new_seed_and_penalty():
    fitted = [FittedPrompt(messages=[], prompt_ids=[key]) for key in range(4)]
    first = [Generation(GOOD, "stop", 1, 9), Generation(GOOD[:20], "length", 1, 50),
             Generation("no json here", "stop", 1, 3), Generation(GOOD[:10], "length", 1, 50)]
    engine = ScriptedEngine([{1: (GOOD, "stop"), 2: ("still none", "stop"), 3: (GOOD[:5], "length")},
                             {2: (GOOD, "stop"), 3: ("nothing", "stop")}])
    schemas = [{"schema": key} for key in range(4)]
    sampling = Sampling(max_tokens=50, temperature=0.0, seed=7, json_schema=schemas)
    results, attempts = list(first), [1, 1, 1, 1]
    counts = retry_failed(engine, fitted, sampling, results, attempts,
                          CreateRun(CreateSettings(qtypes="yes_no", structured_output=True, retries=2,
                                                   retry_frequency_penalty=0.3)))
    assert [keys for keys, _ in engine.calls] == [[1, 2, 3], [2, 3]]
    for attempt, (keys, retry_sampling) in enumerate(engine.calls, start=1):
        assert retry_sampling.seed == 7 + attempt * RETRY_SEED_STRIDE and retry_sampling.frequency_penalty == 0.3
        assert retry_sampling.json_schema == [schemas[key] for key in keys]  # each request keeps its own schema
        # a greedy run's retries sample (the default retry temperature), or a greedy retry would loop again
        assert retry_sampling.max_tokens == 50 and retry_sampling.temperature == 0.7
    assert [result.text for result in results] == [GOOD, GOOD, GOOD, GOOD[:10]]  # no usable retry: the first stays
    assert attempts == [1, 2, 3, 3]
    assert counts == {"retried_requests": 3, "retry_output_tokens": len(GOOD) + 10 + 5 + len(GOOD) + 7,
                      "unusable_after_retries": 1}


def test_retries_keep_a_hotter_run_temperature():
    engine = ScriptedEngine([{0: (GOOD, "stop")}])
    results = [Generation("none", "stop", 1, 1)]
    retry_failed(engine, [FittedPrompt(messages=[], prompt_ids=[0])], Sampling(temperature=1.1, top_p=0.9), results,
                 [1], CreateRun(CreateSettings(qtypes="yes_no")))
    assert engine.calls[0][1].temperature == 1.1 and engine.calls[0][1].top_p == 0.9 and results[0].text == GOOD


def test_no_retries_when_asked_or_when_every_reply_is_usable():
    fitted = [FittedPrompt(messages=[], prompt_ids=[0])]
    engine = ScriptedEngine([])
    cut = [Generation(GOOD[:20], "length", 1, 50)]
    settings = CreateRun(CreateSettings(qtypes="yes_no", retries=0))
    assert retry_failed(engine, fitted, Sampling(), cut, [1], settings) == {
        "retried_requests": 0, "retry_output_tokens": 0, "unusable_after_retries": 1}
    assert retry_failed(engine, fitted, Sampling(), [Generation(GOOD, "stop", 1, 9)], [1],
                        CreateRun(CreateSettings(qtypes="yes_no"))) == {
        "retried_requests": 0, "retry_output_tokens": 0, "unusable_after_retries": 0}
    assert engine.calls == []


def test_a_chunk_file_without_its_attempts_column_is_refused(tmp_path):
    row = {column: 1 for column in OUTPUT_COLUMNS if column != "attempts"} | {"question_type": "yes_no"}
    write_csv(pd.DataFrame([row]), tmp_path / "df_yes_no_0_1.csv")
    with pytest.raises(InputError, match="attempts"):
        read_chunks(tmp_path)


# ---------------------------------------------------------------- resume, shards, truncation (tiny model)

def test_resume_regenerates_only_the_missing_chunk(data_dir, tiny_model_dir, tmp_path):
    first = create(data_dir, tmp_path, tiny_model_dir, "--chunk_size", "2", "--max_tokens", "8")
    assert first.returncode == 0, first.stderr[-2000:]
    files = sorted(tmp_path.glob("df_*.csv"))
    assert len(files) == 3 * 4  # 6 notes in chunks of 2, four types
    before = {path.name: path.stat().st_mtime_ns for path in files}
    removed = tmp_path / "df_numeric_2_4.csv"
    removed.unlink()
    second = create(data_dir, tmp_path, tiny_model_dir, "--chunk_size", "2", "--max_tokens", "8")
    assert second.returncode == 0, second.stderr[-2000:]
    after = {path.name: path.stat().st_mtime_ns for path in tmp_path.glob("df_*.csv")}
    assert set(after) == set(before)
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {"df_numeric_2_4.csv"}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    # the manifest adds the second session's 2 requests to the first's 24
    assert manifest["counts"] == {**manifest["counts"], "requests": 26, "written_files": 13, "skipped_files": 11}
    assert [session["counts"]["requests"] for session in manifest["sessions"]] == [24, 2]
    assert "4 new" not in second.stdout and "2 replies in 1 new files" in second.stdout
    # the random model's 8 tokens are never a usable reply: each was tried 1 + 2 times, and counted
    assert read_chunks(tmp_path)["attempts"].tolist() == [3] * 24
    assert manifest["sessions"][1]["counts"] == {**manifest["sessions"][1]["counts"], "retried_requests": 2,
                                                 "unusable_after_retries": 2}
    assert "2 retried, 2 still unusable" in second.stdout


def test_killed_run_resumed_with_other_chunk_sizes_has_every_row_once(data_dir, tiny_model_dir, tmp_path):
    """SIGKILL mid-run, then resumes with chunk sizes 4 and 3: each note x type exactly once, the manifest
    summing the sessions."""
    args = ["--max_tokens", "64", "--retries", "0"]
    manifest_file = tmp_path / "manifest.json"
    assert kill_when(SCRIPT, "--model_id", str(tiny_model_dir), "--dataset", "6", "--data_dir", str(data_dir),
                     "--output_dir", str(tmp_path), "--engine", "transformers", "--chunk_size", "1", *args,
                     ready=lambda: manifest_records(manifest_file, "counts", "requests") > 0), \
        "the run ended before it could be killed"
    killed_manifest = json.loads(manifest_file.read_text())
    assert killed_manifest["complete"] is False
    files_at_kill = len(list(tmp_path.glob("df_*.csv")))
    assert 4 <= files_at_kill < 24
    resumed = create(data_dir, tmp_path, tiny_model_dir, "--chunk_size", "4", *args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    again = create(data_dir, tmp_path, tiny_model_dir, "--chunk_size", "3", *args)
    assert again.returncode == 0 and "0 replies in 0 new files" in again.stdout
    frame = read_chunks(tmp_path)
    notes = pd.read_csv(data_dir / "mimic" / "notes_6.csv.gz")
    assert sorted(zip(frame["note_id"], frame["question_type"])) == sorted(
        (note_id, kind) for note_id in notes["note_id"] for kind in TYPES)
    manifest = json.loads(manifest_file.read_text())
    resumed_requests = int(resumed.stdout.split("stage A: ")[1].split(" replies")[0])
    assert manifest["complete"] is True and len(manifest["sessions"]) == 2
    assert manifest["counts"]["requests"] == killed_manifest["counts"]["requests"] + resumed_requests
    assert manifest["wall_seconds"] == pytest.approx(sum(session["wall_seconds"] for session in manifest["sessions"]),
                                                     abs=0.01)


def test_a_session_killed_inside_its_first_chunk_is_in_the_sessions(data_dir, tiny_model_dir, tmp_path):
    """The manifest records a session before its first chunk: one killed there is listed (and the run marked
    incomplete), and the resume is the second session."""
    args = ["--max_tokens", "32", "--retries", "0", "--chunk_size", "2", "--limit", "2"]
    manifest_file = tmp_path / "manifest.json"
    assert kill_when(SCRIPT, "--model_id", str(tiny_model_dir), "--dataset", "6", "--data_dir", str(data_dir),
                     "--output_dir", str(tmp_path), "--engine", "transformers", *args,
                     ready=manifest_file.exists), "the run wrote no manifest before its first chunk ended"
    killed = json.loads(manifest_file.read_text())
    assert killed["complete"] is False and len(killed["sessions"]) == 1
    assert killed["sessions"][0]["complete"] is False and killed["counts"].get("requests", 0) == 0
    assert not list(tmp_path.glob("df_*.csv"))
    resumed = create(data_dir, tmp_path, tiny_model_dir, *args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    manifest = json.loads(manifest_file.read_text())
    assert manifest["complete"] is True and [session["counts"].get("requests", 0)
                                             for session in manifest["sessions"]] == [0, 8]


def test_a_second_run_on_the_folder_is_refused_and_a_shard_is_not(data_dir, tiny_model_dir, tmp_path):
    """One lock per output folder (per shard): the same run twice at once is refused in one line, before its
    model loads; the other shard of the same folder runs beside it."""
    import os

    args = ["--model_id", str(tiny_model_dir), "--dataset", "6", "--data_dir", str(data_dir), "--output_dir",
            str(tmp_path), "--engine", "transformers", "--max_tokens", "24", "--retries", "0", "--chunk_size", "1"]
    first = start_script(SCRIPT, *args, "--num_shards", "2", "--shard_index", "0")
    try:
        assert wait_for(lambda: holds_lock(tmp_path, layout.lock_name(f"stage-a{layout.shard_suffix(2, 0)}")), process=first), \
            first.communicate()[1][-3000:]
        second = run_script(SCRIPT, *args, "--num_shards", "2", "--shard_index", "0")
        assert second.returncode == 2 and second.stderr.strip().splitlines() == [
            f"error: another run is writing to {tmp_path} (pid {first.pid} on {os.uname().nodename}); wait for it "
            "to end, or write stage A's files elsewhere"]
        other = run_script(SCRIPT, *args, "--num_shards", "2", "--shard_index", "1")
        assert other.returncode == 0, other.stderr[-2000:]
        assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    finally:
        first.kill()
    frame = read_chunks(tmp_path)
    assert len(frame) == 24 and not frame.duplicated(["note_id", "question_type"]).any()
    assert not list(tmp_path.glob(".*.lock"))


def test_shards_cover_every_row_exactly_once(data_dir, tiny_model_dir, tmp_path):
    whole = tmp_path / "whole"
    assert create(data_dir, whole, tiny_model_dir, "--chunk_size", "2", "--max_tokens", "4",
                  "--qtypes", "yes_no,na-bool", "--retries", "0").returncode == 0
    assert read_chunks(whole)["attempts"].tolist() == [1] * 12
    sharded = tmp_path / "sharded"
    for index in range(2):
        result = create(data_dir, sharded, tiny_model_dir, "--chunk_size", "2", "--max_tokens", "4",
                        "--qtypes", "yes_no,na-bool", "--num_shards", "2", "--shard_index", str(index),
                        "--retries", "0")
        assert result.returncode == 0, result.stderr[-2000:]
    assert (sharded / "manifest_shard0of2.json").exists() and (sharded / "manifest_shard1of2.json").exists()
    key = ["note_id", "question_type", "prompt"]

    def rows(folder):
        frame = pd.concat([pd.read_csv(path) for path in folder.glob("df_*.csv")])
        return sorted(map(tuple, frame[key].values.tolist()))

    assert rows(sharded) == rows(whole)
    assert len(rows(whole)) == 6 * 2
    assert sorted(path.name for path in sharded.glob("df_*")) == sorted(path.name for path in whole.glob("df_*"))


def test_long_note_is_shortened_and_flagged(tiny_model_dir, tmp_path):
    long_text = "History of Present Illness:\n" + " ".join(f"finding{index}" for index in range(3000))
    write_csv(pd.DataFrame([{"subject_id": 1, "hadm_id": 2, "note_id": 3, "text": long_text}]),
              tmp_path / "mimic" / "notes_1.csv.gz")
    result = run_script(SCRIPT, "--model_id", str(tiny_model_dir), "--dataset", "1", "--data_dir", str(tmp_path),
                        "--engine", "transformers", "--max_model_len", "2048", "--max_tokens", "8", "--qtypes", "numeric")
    assert result.returncode == 0, result.stderr[-2000:]
    row = pd.read_csv(tmp_path / "synthetic-output" / "1" / "df_numeric_0_1.csv").iloc[0]
    assert bool(row["note_truncated"]) and row["note_tokens_dropped"] > 0
    assert row["prompt_tokens"] <= 2048 - 8
    assert prompts.generation_messages("X", "numeric")[1]["content"].split("</note>")[1] in row["prompt"]
    assert "1 notes shortened" in result.stdout


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("case, message", [
    ("missing_notes", "notes file not found"),
    ("no_text", "lacks column(s) text"),
    ("bad_type", "unknown question type(s) essay"),
    ("bad_shard", "--shard_index must be in 0..1"),
    ("bad_model", "is not a model folder"),
    ("bad_retries", "--retries must be at least 0, got -1"),
])
def test_bad_input_one_line_exit_2_no_files(case, message, tmp_path, tiny_model_dir):
    notes = pd.DataFrame([{"subject_id": 1, "hadm_id": 2, "note_id": 3, "text": "Chief Complaint:\nfever"}])
    if case == "no_text":
        notes = notes.rename(columns={"text": "body"})
    if case != "missing_notes":
        write_csv(notes, tmp_path / "mimic" / "notes_1.csv.gz")
    args = {"bad_type": ["--qtypes", "yes_no,essay"], "bad_shard": ["--num_shards", "2", "--shard_index", "2"],
            "bad_retries": ["--retries", "-1"]}
    model = tmp_path / "no-such-model" if case == "bad_model" else tiny_model_dir
    result = run_script(SCRIPT, "--model_id", str(model), "--dataset", "1", "--data_dir", str(tmp_path),
                        "--engine", "transformers", "--max_tokens", "4", *args.get(case, []))
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    if case == "missing_notes":
        assert "synthetic-0-select-notes.py" in errors[0]
    assert not (tmp_path / "synthetic-output").exists()


def test_empty_notes_are_skipped_and_counted(tmp_path, tiny_model_dir):
    notes = pd.DataFrame([{"subject_id": 1, "hadm_id": 2, "note_id": 3, "text": "Chief Complaint:\nfever"},
                          {"subject_id": 4, "hadm_id": 5, "note_id": 6, "text": "   "},
                          {"subject_id": 7, "hadm_id": 8, "note_id": 9, "text": None}])
    write_csv(notes, tmp_path / "mimic" / "notes_3.csv.gz")
    result = run_script(SCRIPT, "--model_id", str(tiny_model_dir), "--dataset", "3", "--data_dir", str(tmp_path),
                        "--engine", "transformers", "--max_tokens", "4", "--qtypes", "yes_no")
    assert result.returncode == 0, result.stderr[-2000:]
    frame = pd.read_csv(tmp_path / "synthetic-output" / "3" / "df_yes_no_0_3.csv")
    assert frame["note_id"].tolist() == [3]
    assert "2 empty notes skipped" in result.stdout
    assert json.loads((tmp_path / "synthetic-output" / "3" / "manifest.json").read_text())["unusable_notes"] == 2
