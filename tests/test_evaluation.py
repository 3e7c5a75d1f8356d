"""The evaluation tasks end to end: preprocessing the samples, eval-inference.py, the six notebooks."""

import json

import numpy as np
import pandas as pd
import papermill
import pytest
import torch

from clinical_distil import preprocess
from clinical_distil.evaluate import read_model_outputs
from clinical_distil.n2c2 import read_folder
from clinical_distil.prompts import answer_target
from clinical_distil.tasks import N2C2_CRITERIA

from conftest import REPO, SAMPLES, kill_when, manifest_records, run_script


def test_preprocessing_the_samples():
    annotated = preprocess.annotated_synthetic_prompts(SAMPLES / "annotated-synthetic")
    assert len(annotated) == 60 and list(annotated.columns) == ["id", "question", "label", "difficulty",
                                                                "question_type", "prompt"]
    assert set(annotated.loc[annotated["question_type"].str.startswith("na-"), "label"]) == {"NA"}
    train = preprocess.n2c2_prompts(SAMPLES / "n2c2-2018-track1" / "train")
    patients = read_folder(SAMPLES / "n2c2-2018-track1" / "train")
    assert len(train) == 13 * len(patients)
    first = train[train["patient"] == patients[0].patient].set_index("question_label")
    assert first["label"].to_dict() == {criterion: int(met) for criterion, met in patients[0].tags.items()}
    assert first.loc["MI-6MOS", "question"].endswith(f"before {patients[0].record_dates[-1]}?")
    assert patients[0].records[0][:200] in first.loc["ABDOMINAL", "prompt"]
    apixaban = preprocess.apixaban_prompts(SAMPLES / "apixaban")
    assert len(apixaban) == 8 * 23 and (apixaban["question_type"] == "numeric").sum() == 8 * 8
    raw = pd.concat(pd.read_csv(path) for path in sorted((SAMPLES / "apixaban").glob("*.csv")))
    assert apixaban["label"].tolist() == [preprocess.normalize_answer(answer) for answer in raw["answer"]]


def test_bad_evaluation_input(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "7.xml").write_text("<PatientMatching><TEXT>cut")
    with pytest.raises(preprocess.InputError, match="7.xml"):
        preprocess.n2c2_prompts(tmp_path / "broken")
    (tmp_path / "apx").mkdir()
    pd.DataFrame({"criterion": ["warfarin"], "answer": ["Yes"], "text": ["note"]}).to_csv(tmp_path / "apx" / "a.csv")
    with pytest.raises(preprocess.InputError, match="unknown apixaban criterion warfarin"):
        preprocess.apixaban_prompts(tmp_path / "apx")
    missing = run_script("eval-inference.py", "--model_id", "models/tiny-random-llama", "--dataset_name", "apixaban",
                         "--input_file", "prompts", "--data_dir", str(tmp_path))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].endswith("make it with d-apixaban-eval-task/apixaban-a-preprocess.ipynb")


def write_eval_data(root, name, frame):
    path = root / "eval-data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def test_eval_inference_aligns_resumes_and_records(tmp_path, default_model_dir):
    prompts = preprocess.annotated_synthetic_prompts(SAMPLES / "annotated-synthetic").iloc[:3]
    write_eval_data(tmp_path, "annotated-synthetic/prompts.csv", prompts)
    args = ["--model_id", str(default_model_dir), "--dataset_name", "annotated-synthetic", "--input_file", "prompts",
            "--data_dir", str(tmp_path), "--engine", "transformers", "--chunk_size", "2", "--max_output_tokens", "16",
            "--max_model_len", "640", "--start_row", "1"]
    first = run_script("eval-inference.py", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = tmp_path / "outputs" / "annotated-synthetic" / default_model_dir.name
    assert sorted(path.name for path in folder.glob("*.csv")) == ["prompts_1_2_chunk_0.csv"]
    chunk = pd.read_csv(folder / "prompts_1_2_chunk_0.csv", keep_default_na=False)
    assert chunk["id"].tolist() == prompts["id"].iloc[1:3].tolist()  # the rows asked for, in order
    assert chunk["note_truncated"].all() and (chunk["prompt_tokens"] <= 640 - 16).all()
    assert (chunk["output_tokens"] <= 16).all() and set(chunk["finish_reason"]) <= {"stop", "length"}
    manifest = json.loads((folder / "manifest_prompts.json").read_text())
    assert manifest["answered"] == 2 and manifest["seconds_per_example"] > 0 and manifest["rows"] == [1, 3]
    again = run_script("eval-inference.py", *args)
    assert again.returncode == 0 and "0 answers (1 chunks already done" in again.stdout
    assert pd.read_csv(folder / "prompts_1_2_chunk_0.csv", keep_default_na=False).equals(chunk)
    # the rerun that did nothing keeps the first run's manifest and its timings
    assert json.loads((folder / "manifest_prompts.json").read_text()) == manifest


def test_several_datasets_answered_with_one_model_load_as_each_alone(tmp_path, tiny_model_dir):
    """--dataset_name a,b: one model load, and per dataset the very files (and answers) a run of it alone writes."""
    annotated = preprocess.annotated_synthetic_prompts(SAMPLES / "annotated-synthetic").iloc[:4]
    apixaban = preprocess.apixaban_prompts(SAMPLES / "apixaban").iloc[:5]
    common = ["--model_id", str(tiny_model_dir), "--engine", "transformers", "--max_output_tokens", "12",
              "--max_model_len", "640", "--model_name", "tiny", "--chunk_size", "2"]
    for root in (tmp_path / "together", tmp_path / "alone"):
        write_eval_data(root, "annotated-synthetic/prompts.csv", annotated)
        write_eval_data(root, "apixaban/test.csv", apixaban)
    together = run_script("eval-inference.py", *common, "--data_dir", str(tmp_path / "together"),
                          "--dataset_name", "annotated-synthetic,apixaban", "--input_file", "prompts,test",
                          "--num_inference", "3,all")
    assert together.returncode == 0, together.stderr[-3000:]
    assert together.stderr.count("engine: transformers for") == 1 and together.stdout.count("eval-inference: ") == 2
    for dataset, input_file, rows in (("annotated-synthetic", "prompts", "3"), ("apixaban", "test", "all")):
        alone = run_script("eval-inference.py", *common, "--data_dir", str(tmp_path / "alone"),
                           "--dataset_name", dataset, "--input_file", input_file, "--num_inference", rows)
        assert alone.returncode == 0, alone.stderr[-3000:]
        folders = [root / "outputs" / dataset / "tiny" for root in (tmp_path / "together", tmp_path / "alone")]
        files = [sorted(path.name for path in folder.glob("*.csv")) for folder in folders]
        assert files[0] == files[1] and files[0]
        answers = [read_model_outputs(folder, input_file) for folder in folders]
        assert answers[0]["output"].tolist() == answers[1]["output"].tolist()
        manifest = json.loads((folders[0] / f"manifest_{input_file}.json").read_text())
        assert manifest["dataset_name"] == dataset and manifest["answered"] == (3 if rows == "3" else len(apixaban))


@pytest.mark.parametrize("flags, message", [
    (["--dataset_name", "apixaban,apixaban"], "--dataset_name names a dataset twice (apixaban,apixaban)"),
    (["--dataset_name", "apixaban,i2b2", "--input_file", "a,b,c"], "--input_file gives 3 values for 2 datasets"),
    (["--dataset_name", "apixaban,i2b2", "--num_inference", "3,4,5"], "--num_inference gives 3 values for 2 datasets"),
    (["--dataset_name", "apixaban,,i2b2"], "--dataset_name 'apixaban,,i2b2' holds an empty name"),
    (["--dataset_name", "apixaban,i2b2", "--num_inference", "3,0"], "--num_inference must be a whole number or 'all'"),
    (["--dataset_name", "apixaban,i2b2", "--output_dir", "out"], "--output_dir names one folder"),
])
def test_several_datasets_bad_flags_refused_in_one_line(tmp_path, flags, message):
    done = run_script("eval-inference.py", "--model_id", "models/tiny-random-llama", "--data_dir", str(tmp_path), *flags)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), done.stderr
    assert not (tmp_path / "outputs").exists()


def test_killed_eval_inference_resumed_with_other_chunk_sizes_answers_every_row_once(tmp_path, tiny_model_dir):
    prompts = preprocess.annotated_synthetic_prompts(SAMPLES / "annotated-synthetic").iloc[:8]
    write_eval_data(tmp_path, "annotated-synthetic/prompts.csv", prompts)
    args = ["--model_id", str(tiny_model_dir), "--dataset_name", "annotated-synthetic", "--input_file", "prompts",
            "--data_dir", str(tmp_path), "--engine", "transformers", "--max_output_tokens", "48",
            "--max_model_len", "640", "--model_name", "tiny"]
    folder = tmp_path / "outputs" / "annotated-synthetic" / "tiny"
    manifest_file = folder / "manifest_prompts.json"
    assert kill_when("eval-inference.py", *args, "--chunk_size", "1", ready=lambda: manifest_records(manifest_file, "answered") > 0), \
        "the run ended before it could be killed"
    killed = json.loads(manifest_file.read_text())
    assert killed["complete"] is False and 1 <= killed["answered"] < 8
    resumed = run_script("eval-inference.py", *args, "--chunk_size", "3")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    outputs = read_model_outputs(folder, "prompts")
    assert outputs["id"].tolist() == prompts["id"].tolist()  # every row once, in order
    manifest = json.loads(manifest_file.read_text())
    answered_now = int(resumed.stdout.split("eval-inference: ")[1].split(" answers")[0])
    assert manifest["complete"] is True and manifest["answered"] == killed["answered"] + answered_now
    assert manifest["seconds_per_example"] == pytest.approx(manifest["wall_seconds"] / manifest["answered"], abs=1e-3)
    # fewer rows than the folder holds: refused in one line (an evaluation would mix them in) ...
    fewer = run_script("eval-inference.py", *args, "--num_inference", "4")
    assert fewer.returncode == 2 and len(fewer.stderr.strip().splitlines()) == 1, fewer.stderr
    assert "holds answers to rows 4-7 of prompts" in fewer.stderr and "--overwrite" in fewer.stderr, fewer.stderr
    assert read_model_outputs(folder, "prompts")["id"].tolist() == prompts["id"].tolist()
    # ... and replaced when asked
    replaced = run_script("eval-inference.py", *args, "--num_inference", "4", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert read_model_outputs(folder, "prompts")["id"].tolist() == prompts["id"].iloc[:4].tolist()
    assert json.loads(manifest_file.read_text())["answered"] == 4


def test_eval_inference_serves_a_lora_adapter(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False))
    model.save_pretrained(tmp_path / "adapter-run")
    prompts = pd.DataFrame({"id": ["a"], "prompt": ["Clinical note:\n<note>\nASA 81 mg daily.\n</note>\n\nQuestion: aspirin?"]})
    write_eval_data(tmp_path, "mini/test.csv", prompts)
    base_args = ["--model_id", str(tiny_model_dir), "--dataset_name", "mini", "--input_file", "test",
                 "--data_dir", str(tmp_path), "--engine", "transformers", "--max_output_tokens", "8"]
    with_adapter = run_script("eval-inference.py", *base_args, "--adapter", str(tmp_path / "adapter-run"))
    plain = run_script("eval-inference.py", *base_args)
    assert with_adapter.returncode == 0 and plain.returncode == 0, with_adapter.stderr[-2000:] + plain.stderr[-2000:]
    adapted = pd.read_csv(tmp_path / "outputs/mini/adapter-run/test_0_1_chunk_0.csv", keep_default_na=False)
    base = pd.read_csv(tmp_path / f"outputs/mini/{tiny_model_dir.name}/test_0_1_chunk_0.csv", keep_default_na=False)
    assert adapted["output"][0] != base["output"][0]
    assert json.loads((tmp_path / "outputs/mini/adapter-run/manifest_test.json").read_text())["adapter"]
    # both models from one load: the same answers as the two runs above, each in its own folder
    both = run_script("eval-inference.py", *base_args, "--adapter", str(tmp_path / "adapter-run"),
                      "--model_name", "distilled", "--base_model_name", "base")
    assert both.returncode == 0, both.stderr[-2000:]
    assert both.stdout.count("eval-inference: 1 answers") == 2
    for name, alone in (("distilled", adapted), ("base", base)):
        together = pd.read_csv(tmp_path / f"outputs/mini/{name}/test_0_1_chunk_0.csv", keep_default_na=False)
        assert together["output"].tolist() == alone["output"].tolist()
        manifest = json.loads((tmp_path / f"outputs/mini/{name}/manifest_test.json").read_text())
        assert (manifest["model_name"], bool(manifest["adapter"])) == (name, name == "distilled")
    for flags, message in (
            (["--base_model_name", "base"], "--base_model_name answers with the base model beside its --adapter"),
            (["--adapter", str(tmp_path / "adapter-run"), "--base_model_name", "adapter-run"],
             "--base_model_name 'adapter-run' must name a folder other than the adapter's answers"),
            (["--adapter", str(tmp_path / "adapter-run"), "--base_model_name", "b", "--output_dir", "x"],
             "--output_dir names one folder; with --base_model_name")):
        refused = run_script("eval-inference.py", *base_args, *flags)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr
        assert lines[0].startswith(f"error: {message}"), refused.stderr
    # vLLM's LoRA kernels take bf16/fp16 only: refused up front, before any model loads
    float32_lora = run_script("eval-inference.py", *base_args[:-4], "--engine", "vllm", "--dtype", "float32",
                              "--adapter", str(tmp_path / "adapter-run"))
    assert float32_lora.returncode == 2
    assert "vLLM serves adapters in bfloat16 or float16 only" in float32_lora.stderr.strip().splitlines()[-1]


def execute(notebook, output_dir, **parameters):
    path = REPO / notebook
    return papermill.execute_notebook(str(path), str(output_dir / path.name), parameters=parameters,
                                      kernel_name="python3", cwd=str(path.parent), progress_bar=False)


def fake_outputs(root, dataset, input_file, model, answer_for):
    """An eval-inference output file whose replies come from `answer_for(row)` (None: an unparseable reply)."""
    rows = pd.read_csv(root / "eval-data" / dataset / f"{input_file}.csv", keep_default_na=False)
    replies = []
    for row in rows.to_dict("records"):
        answer = answer_for(row)
        replies.append("I am not sure." if answer is None else answer_target({"question": row["question"],
                                                                              "answer": answer}))
    folder = root / "outputs" / dataset / model
    folder.mkdir(parents=True, exist_ok=True)
    rows.assign(output=replies, finish_reason="stop").to_csv(folder / f"{input_file}_0_{len(rows)}_chunk_0.csv",
                                                             index=False)
    return rows


def test_the_six_notebooks_on_the_samples(tmp_path):
    data = {"data_dir": str(tmp_path)}
    samples = str(SAMPLES)  # an absolute folder works as well as one relative to the data root
    execute("b-synthetic-eval-task/annotated_synthetic-a-preprocess.ipynb", tmp_path, **data,
            input_dir=f"{samples}/annotated-synthetic")
    execute("c-i2b2-eval-task/i2b2-a-preprocess.ipynb", tmp_path, **data, input_dir=f"{samples}/n2c2-2018-track1")
    execute("d-apixaban-eval-task/apixaban-a-preprocess.ipynb", tmp_path, **data, input_dir=f"{samples}/apixaban")
    assert len(pd.read_csv(tmp_path / "eval-data/i2b2/test.csv")) == 13 * 6

    # "oracle" answers every gold value (CREATININE / HBA1C as numbers on the right side of the threshold);
    # "always-no" says No to everything; every third reply of "always-no" is unparseable on apixaban
    def i2b2_oracle(row):
        if row["question_label"] == "CREATININE":
            return "2.0" if row["label"] == 1 else "1.0"
        if row["question_label"] == "HBA1C":
            return "7.0" if row["label"] == 1 else "NA"
        return "Yes" if row["label"] == 1 else "No"

    test = fake_outputs(tmp_path, "i2b2", "test", "oracle", i2b2_oracle)
    fake_outputs(tmp_path, "i2b2", "test", "always-no", lambda row: "No")
    execute("c-i2b2-eval-task/i2b2-b-evaluate-performance.ipynb", tmp_path, **data, input_file="test",
            gold_dir=f"{samples}/n2c2-2018-track1/test", resamples=200)
    results = tmp_path / "outputs/i2b2/evaluation/test"
    summary = pd.read_csv(results / "summary.csv").set_index("model")
    assert summary.loc["oracle", ["balanced_accuracy", "micro_f1", "n2c2_micro_f1"]].tolist() == [1.0] * 3
    # macro: a criterion with no met patient in this split scores F1 0 for "met" even when all are right
    met_share = test.groupby("question_label")["label"].mean()
    expected_macro = (((met_share > 0).mean()) + ((met_share < 1).mean())) / 2
    assert summary.loc["oracle", "n2c2_macro_f1"] == pytest.approx(round(expected_macro, 4)) and expected_macro < 1
    not_met_share = 1 - met_share
    assert summary.loc["always-no", "micro_f1"] == pytest.approx(round(not_met_share.mean(), 4))
    # recall of each class present, averaged: 0.5 where both classes occur, 1 where all are "not met"
    per_criterion = np.where((met_share > 0) & (met_share < 1), 0.5, np.where(met_share == 0, 1.0, 0.0))
    assert summary.loc["always-no", "balanced_accuracy"] == pytest.approx(round(per_criterion.mean(), 4))
    assert summary.loc["always-no", "n2c2_micro_f1_met"] == 0.0
    table = pd.read_csv(results / "balanced_accuracy_by_question.csv").set_index("question_label")
    assert list(table.index[:13]) == sorted(N2C2_CRITERIA) and table.loc["Average", "oracle"] == 1.0
    assert len(list((results / "xml" / "oracle").glob("*.xml"))) == 6
    gold = {patient.patient: patient.tags for patient in read_folder(SAMPLES / "n2c2-2018-track1/test")}
    assert {patient.patient: patient.tags for patient in read_folder(results / "xml" / "oracle")} == gold
    for name in ("balanced_accuracy_by_model.png", "balanced_accuracy_heatmap.png", "micro_f1_by_model.png"):
        assert (results / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    apixaban = fake_outputs(tmp_path, "apixaban", "prompts", "oracle", lambda row: row["label"])
    counter = iter(range(10**6))
    fake_outputs(tmp_path, "apixaban", "prompts", "always-no",
                 lambda row: None if next(counter) % 3 == 0 else "No")
    execute("d-apixaban-eval-task/apixaban-b-evaluate-performance.ipynb", tmp_path, **data, resamples=200)
    summary = pd.read_csv(tmp_path / "outputs/apixaban/evaluation/prompts/summary.csv").set_index("model")
    assert summary.loc["oracle", "balanced_accuracy"] == 1.0 and summary.loc["oracle", "parse_failures"] == 0
    assert summary.loc["always-no", "parse_failures"] == int(np.ceil(len(apixaban) / 3))

    annotated = fake_outputs(tmp_path, "annotated-synthetic", "prompts", "oracle", lambda row: row["label"])
    fake_outputs(tmp_path, "annotated-synthetic", "prompts", "always-no", lambda row: "No")
    execute("b-synthetic-eval-task/annotated_synthetic-b-evaluate-performance.ipynb", tmp_path, **data,
            resamples=200)
    summary = pd.read_csv(tmp_path / "outputs/annotated-synthetic/evaluation/prompts/summary.csv").set_index("model")
    assert summary.loc["oracle", "accuracy"] == 1.0
    yes_no = annotated[annotated["question_type"] == "yes_no"]
    assert summary.loc["always-no", "accuracy_yes_no"] == pytest.approx(round((yes_no["label"] == "No").mean(), 4))
    assert summary.loc["always-no", "accuracy_na-bool"] == 0.0
    assert summary.loc["always-no", "accuracy"] == pytest.approx(round((annotated["label"] == "No").mean(), 4))


def test_worked_examples_one_per_type_shortest_first_as_many_as_fit_beside_the_whole_note(tmp_path, tiny_model_dir):
    """The few-shot baseline's examples: a stage C training set's shortest example of each question type in turn;
    before a prompt, as many of them as fit the context beside its whole note, then none (and the note shortened)."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from clinical_distil.chat import render_ids
    from clinical_distil.eval_inference import conversation, fit_prompts, worked_examples
    from clinical_distil.prompts import answer_messages

    rows = [{"id": f"{kind}-{size}", "prompt": answer_messages("Creatinine 1.4 on admission. " * (10 * size),
                                                               f"Question {kind} {size}?"),
             "output": f'{{"answer": "{kind}-{size}"}}', "question_type": kind, "subject_id": size, "note_id": "n"}
            for kind, size in (("yes_no", 3), ("yes_no", 1), ("numeric", 2), ("na-bool", 5))]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "train_all_1.arrow"))
    worked = worked_examples(tmp_path / "train_all_1.arrow", 3)
    assert [reply for _, reply in worked] == ['{"answer": "yes_no-1"}', '{"answer": "numeric-2"}',
                                              '{"answer": "na-bool-5"}']
    assert worked[0][0] == rows[1]["prompt"][-1]["content"]
    assert [reply for _, reply in worked_examples(tmp_path / "train_all_1.arrow", 9)][-1] == '{"answer": "yes_no-3"}'
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = answer_messages("Platelets 231 on the day of discharge. " * 20, "Lowest platelets?")[-1]["content"]
    by_count = []
    for count in range(4):
        messages = conversation(prompt)
        messages[1:1] = [turn for user, reply in worked[:count] for turn in
                         ({"role": "user", "content": user}, {"role": "assistant", "content": reply})]
        by_count.append(len(render_ids(tokenizer, messages)))
    for budget, shown in ((by_count[3] + 50, 3), (by_count[2], 2), (by_count[2] - 1, 1), (by_count[0], 0)):
        fitted = fit_prompts(tokenizer, [prompt], budget, worked=worked)[0]
        assert (len(fitted.messages) - 2) // 2 == shown and not fitted.note_truncated
        assert fitted.messages[-1]["content"] == prompt and len(fitted.prompt_ids) == by_count[shown]
    shortened = fit_prompts(tokenizer, [prompt], by_count[0] - 20, worked=worked)[0]
    assert len(shortened.messages) == 2 and shortened.note_truncated
