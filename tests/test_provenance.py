"""Run records' provenance: the commit measured, also in a copy of the tree that has no git."""

import subprocess

import pytest

from clinical_distil import provenance


def failed_describe(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(args[0], 128, stdout="", stderr="fatal: not a git repository")


def no_git(*args, **kwargs):
    raise FileNotFoundError("git")


@pytest.mark.parametrize("run", [failed_describe, no_git])
def test_a_copy_without_git_names_the_commit_it_was_made_from_else_unknown(monkeypatch, run):
    monkeypatch.setattr(provenance.subprocess, "run", run)
    monkeypatch.setenv("CLINICAL_DISTIL_CODE", "abc1234")
    assert provenance.code_version() == "abc1234 (copy without git)"
    monkeypatch.delenv("CLINICAL_DISTIL_CODE")
    assert provenance.code_version() == "unknown"


def test_a_checkout_names_the_commit_from_git_describe(monkeypatch):
    monkeypatch.setattr(provenance.subprocess, "run", lambda *args, **kwargs: subprocess.CompletedProcess(
        args[0], 0, stdout="096008e-dirty\n", stderr=""))
    monkeypatch.setenv("CLINICAL_DISTIL_CODE", "abc1234")
    assert provenance.code_version() == "096008e-dirty"


def test_a_record_starts_with_date_card_command_and_code(monkeypatch):
    monkeypatch.setattr(provenance, "card", lambda: "CPU (2 cores)")
    monkeypatch.setattr(provenance, "code_version", lambda: "096008e")
    monkeypatch.setattr(provenance.time, "strftime", lambda fmt: "2026-12-06")
    monkeypatch.setattr(provenance.sys, "argv", ["known_answer.py", "--arms", "reference:30"])
    assert provenance.provenance("experiments/known_answer.py") == {
        "date": "2026-12-06", "card": "CPU (2 cores)",
        "command": "python experiments/known_answer.py --arms reference:30", "code": "096008e"}
