"""The four generation prompts ask for what the design lists (tested on the rendered text)."""

import json

import pytest

from clinical_distil import prompts

NOTE = "Chief Complaint:\nChest pain\n\nPertinent Results:\n[**2150-3-4**] 06:40AM BLOOD Creat-1.4"


@pytest.mark.parametrize("question_type", prompts.QUESTION_TYPES)
def test_every_prompt_has_note_keys_sections_example_and_parser_demand(question_type):
    system, user = prompts.generation_messages(NOTE, question_type, questions_per_type=5)
    assert system["role"] == "system" and user["role"] == "user"
    assert user["content"].index(NOTE) < user["content"].index("Return a JSON list")  # note first, request after
    for key in ("question", "type", "answer", "section", "source", "difficulty", "explanation"):
        assert f'- "{key}":' in user["content"]
    for section in prompts.SECTIONS:
        assert section in user["content"]
    assert "integer from 1 (trivial) to 10" in user["content"]
    assert user["content"].rstrip().endswith("must parse with a JSON parser.")
    example = json.loads(user["content"].split("(about a different patient):\n")[1].split("\n\nYour whole")[0])
    assert isinstance(example, list) and set(example[0]) == set(prompts.ITEM_KEYS)


def test_system_message_carries_the_shared_rules():
    text = prompts.load_templates().system
    for fact in ("valid JSON", "shifted", "future", "highest", "recorded in this note", "specific to this patient",
                 "eligibility criteria", "demographics", "same attribute", "less common but clinically relevant"):
        assert fact in text


def test_counts_per_type():
    yes_no = prompts.generation_messages(NOTE, "yes_no", 5)[1]["content"]
    assert "Write 10 yes/no questions" in yes_no and "5 whose answer is Yes and 5 whose answer is No" in yes_no
    assert "Write 4 yes/no questions" in prompts.generation_messages(NOTE, "yes_no", 2)[1]["content"]
    numeric = prompts.generation_messages(NOTE, "numeric", 5)[1]["content"]
    assert "up to 10 questions" in numeric and "single number" in numeric
    for word in ("first", "last", "highest", "lowest", "admission", "discharge", "ICU", "empty list"):
        assert word in numeric
    na_numeric = prompts.generation_messages(NOTE, "na-numeric", 3)[1]["content"]
    assert "Write 3 questions" in na_numeric and "does not contain" in na_numeric and '"N/A"' in na_numeric
    assert '"not found"' in na_numeric
    na_bool = prompts.generation_messages(NOTE, "na-bool", 3)[1]["content"]
    assert "Write 3 yes/no questions" in na_bool and "cannot answer" in na_bool
    assert "serious or chronic diagnosis" in na_bool


def test_unknown_question_type_is_refused():
    with pytest.raises(ValueError, match="unknown question type"):
        prompts.generation_messages(NOTE, "multiple_choice")


def test_schema_requires_every_key_and_bounds_the_list():
    schema = prompts.item_schema("yes_no", 5)
    assert schema["type"] == "array" and schema["maxItems"] == 10
    assert schema["items"]["required"] == list(prompts.ITEM_KEYS)
    assert schema["items"]["properties"]["answer"] == {"enum": ["Yes", "No"]}
    assert prompts.item_schema("na-bool", 3)["items"]["properties"]["answer"] == {"enum": ["N/A"]}
    assert prompts.item_schema("numeric", 7)["maxItems"] == 10
    assert schema["items"]["properties"]["explanation"] == {"type": "string"}


def test_note_slot_finds_the_note():
    messages = prompts.generation_messages(NOTE, "numeric")
    index, start, end = prompts.note_slot(messages, NOTE)
    assert messages[index]["content"][start:end] == NOTE


# ---------------------------------------------------------------- prompt templates of one's own

def test_a_prompt_dir_replaces_the_files_it_holds(tmp_path):
    (tmp_path / "teacher_yes_no.txt").write_text("NOTE START\n$note\nNOTE END\nAsk $total questions: $count Yes, $count No.")
    (tmp_path / "answer.txt").write_text("[[note]]\n$note\n[[/note]]\nQ: $question ($$ unit)")
    own = prompts.load_templates(str(tmp_path))
    assert prompts.generation_messages(NOTE, "yes_no", 3, own)[1]["content"] == (
        f"NOTE START\n{NOTE}\nNOTE END\nAsk 6 questions: 3 Yes, 3 No.")
    # files the folder lacks stay the shipped ones
    assert prompts.generation_messages(NOTE, "numeric", 3, own) == prompts.generation_messages(NOTE, "numeric", 3)
    assert own.system == prompts.load_templates().system
    answer = prompts.answer_messages(NOTE, "Is it?", own)[1]["content"]
    assert answer == f"[[note]]\n{NOTE}\n[[/note]]\nQ: Is it? ($ unit)"
    assert prompts.note_of(answer, own) == NOTE
    assert prompts.note_of(answer) is None  # the shipped template's markers are not in it


@pytest.mark.parametrize("file_name, text, message", [
    ("answer.txt", "Question: $question", r"answer.txt lacks \$note"),
    ("teacher_numeric.txt", "$note and $unknown", r"cannot fill"),
])
def test_a_bad_template_is_one_clear_error(tmp_path, file_name, text, message):
    from clinical_distil.files import InputError

    (tmp_path / file_name).write_text(text)
    with pytest.raises(InputError, match=message):
        templates = prompts.load_templates(str(tmp_path))
        prompts.generation_messages(NOTE, "numeric", 2, templates)
    with pytest.raises(InputError, match="is not a folder"):
        prompts.load_templates(str(tmp_path / "missing"))


@pytest.mark.parametrize("content", [bytes(range(256)), b"$note \x00 $question"])
def test_a_binary_template_is_one_clear_error(tmp_path, content):
    from clinical_distil.files import InputError

    (tmp_path / "answer.txt").write_bytes(content)
    with pytest.raises(InputError, match=f"prompt template {tmp_path / 'answer.txt'} is not UTF-8 text"):
        prompts.load_templates(str(tmp_path))
