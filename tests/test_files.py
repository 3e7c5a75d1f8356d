"""clinical_distil.files: atomic writes with the umask's mode, one-line refusals, and the output folder lock."""

import os
import signal
import stat
import subprocess
import sys

import pytest

from clinical_distil import layout
from clinical_distil.files import FolderLock, InputError, atomic_path, check_model, model_location, write_text
from clinical_distil.layout import lock_name

HOLD = """
import sys, time
from pathlib import Path
from clinical_distil.files import FolderLock
FolderLock(Path(sys.argv[1]), "the test's files")
print("held", flush=True)
time.sleep(600)
"""


def hold_lock(folder):
    """A separate process that takes the folder's lock and keeps it until killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_umasks_mode(tmp_path, umask, mode):
    """Not the 0600 of a temporary file: a group on a shared cluster reads what the umask lets it."""
    target = tmp_path / "out" / "table.csv.gz"
    code = ("import os, sys; os.umask(int(sys.argv[2], 8)); import pandas as pd; "
            "from clinical_distil.files import write_csv; write_csv(pd.DataFrame({'a': [1]}), sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(target), oct(umask)], check=True)
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert [path.name for path in target.parent.iterdir()] == ["table.csv.gz"]  # no temporary file left


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = write_text("old", tmp_path / "a.txt")
    with pytest.raises(RuntimeError), atomic_path(target) as temp_path:
        temp_path.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_atomic_write_refuses_a_folder_or_a_file_in_the_way(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a folder; give a file name"):
        write_text("x", tmp_path / "folder")
    with pytest.raises(InputError, match="is a file, not a folder"):
        write_text("x", tmp_path / "file" / "a.txt")


def test_a_held_lock_refuses_a_second_run_naming_the_holder(tmp_path):
    holder = hold_lock(tmp_path / "out")
    try:
        with pytest.raises(InputError) as refused:
            FolderLock(tmp_path / "out", "these answers")
        assert str(refused.value) == (f"another run is writing to {tmp_path / 'out'} (pid {holder.pid} on "
                                      f"{os.uname().nodename}); wait for it to end, or write these answers elsewhere")
        FolderLock(tmp_path / "out", name=lock_name("other-shard")).release()  # another output in the folder
    finally:
        holder.kill()
        holder.wait()
    # a killed holder leaves its file, but no lock: the next run takes it
    assert (tmp_path / "out" / lock_name()).exists()
    lock = FolderLock(tmp_path / "out")
    lock.release()
    assert os.listdir(tmp_path / "out") == []


def test_a_lock_leaves_nothing_behind(tmp_path):
    """Released (or at exit), the lock removes its file, and the folder it made if nothing came into it."""
    (tmp_path / "made").mkdir()
    FolderLock(tmp_path / "new" / "deeper").release()
    assert os.listdir(tmp_path) == ["made"]
    lock = FolderLock(tmp_path / "kept")
    write_text("result", tmp_path / "kept" / "result.txt")
    lock.release()
    assert os.listdir(tmp_path / "kept") == ["result.txt"]
    code = "import sys; from pathlib import Path; from clinical_distil.files import FolderLock; " \
           "FolderLock(Path(sys.argv[1])); sys.exit(2)"
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path / "exit")]).returncode == 2
    assert not (tmp_path / "exit").exists()


def test_ranks_after_the_first_do_not_lock(tmp_path, monkeypatch):
    """Under accelerate every process runs the script: the first one locks for all of them."""
    first = FolderLock(tmp_path)
    monkeypatch.setenv("LOCAL_RANK", "1")
    second = FolderLock(tmp_path)
    assert second.handle is None
    first.release()


def test_the_guard_stops_its_command_when_its_parent_is_killed(tmp_path):
    """The driver's children run under clinical_distil.guard: a SIGKILLed driver takes them with it."""
    marker = tmp_path / "marker"
    parent_code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-m', 'clinical_distil.guard', "
                   "sys.executable, '-c', 'import time; time.sleep(600)', sys.argv[1]]); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", parent_code, str(marker)])
    from conftest import processes_mentioning, wait_for

    assert wait_for(lambda: len(processes_mentioning("time.sleep(600)", str(marker))) == 3, timeout=60)  # parent, guard, command
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert wait_for(lambda: not processes_mentioning("time.sleep(600)", str(marker)), timeout=60), \
        processes_mentioning(str(marker))


def test_a_stop_that_comes_while_the_command_starts_stops_the_command(tmp_path):
    """The parent's death (SIGTERM) arriving while the guard starts its command: the command is stopped once it has
    started, and the guard exits 143, not killed outright with its command left running."""
    marker = tmp_path / "marker"
    script = ("import os, signal, subprocess, sys\n"
              "from clinical_distil import guard\n"
              "real = subprocess.Popen\n"
              "def starting(*args, **kwargs):\n"
              "    child = real(*args, **kwargs)\n"
              "    os.kill(os.getpid(), signal.SIGTERM)  # the stop, before the guard's main goes on\n"
              "    return child\n"
              "subprocess.Popen = starting\n"
              "sys.exit(guard.main([sys.executable, '-c', 'import time; time.sleep(600)', sys.argv[1]]))\n")
    from conftest import processes_mentioning, wait_for

    done = subprocess.run([sys.executable, "-c", script, str(marker)], timeout=120)
    assert done.returncode == 143
    assert wait_for(lambda: not processes_mentioning("time.sleep(600)", str(marker)), timeout=30), \
        processes_mentioning(str(marker))


def test_the_guard_passes_the_exit_code_on():
    code = subprocess.run([sys.executable, "-m", "clinical_distil.guard", sys.executable, "-c",
                           "import sys; sys.exit(7)"]).returncode
    assert code == 7


def test_a_group_of_outputs_appears_whole_or_not_at_all(tmp_path):
    """Stage B's, stage C's and the preprocess notebooks' files: a failure halfway leaves the old set untouched."""
    import pandas as pd

    from clinical_distil.files import atomic_group, read_csv, write_csv

    table, folder = tmp_path / "a.csv.gz", tmp_path / "train.arrow"
    write_text("old table", tmp_path / "old.txt")
    folder.mkdir()
    (folder / "old").write_text("old dataset")
    with pytest.raises(RuntimeError), atomic_group([table, folder]) as (staged_table, staged_folder):
        write_csv(pd.DataFrame({"a": [1]}), staged_table)
        raise RuntimeError("killed between the two")
    assert not table.exists() and os.listdir(folder) == ["old"]
    assert sorted(os.listdir(tmp_path)) == ["old.txt", "train.arrow"]  # no staging left
    with atomic_group([table, folder]) as (staged_table, staged_folder):
        assert staged_table.name.endswith(".csv.gz")  # a writer that reads the suffix gzips it
        write_csv(pd.DataFrame({"a": [1]}), staged_table)
        staged_folder.mkdir()
        (staged_folder / "new").write_text("new dataset")
    assert read_csv(table)["a"].tolist() == [1] and os.listdir(folder) == ["new"]
    assert sorted(os.listdir(tmp_path)) == ["a.csv.gz", "old.txt", "train.arrow"]


@pytest.fixture
def repository(tmp_path, monkeypatch):
    """A repository root of its own with one model folder (models/tiny) and one folder that is no model, read
    from another working folder, the hub offline with an empty cache."""
    root = tmp_path / "repo"
    (root / "models" / "tiny").mkdir(parents=True)
    (root / "models" / "tiny" / "config.json").write_text("{}")
    (root / "models" / "empty").mkdir()
    monkeypatch.setattr(layout, "REPO_ROOT", root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    return root


def test_a_relative_model_folder_is_read_against_the_repository_from_any_folder(repository):
    check_model("models/tiny")
    assert model_location("models/tiny") == str(repository / "models" / "tiny")
    assert model_location("owner/name") == "owner/name"


@pytest.mark.parametrize("model_id, role, message", [
    ("models/empty", "--model_id", "--model_id models/empty is not a model folder (no config.json in "
     "{root}/models/empty); give a folder holding a model or a hub id"),
    ("/nowhere/student", "student", "student /nowhere/student is not a model folder (no config.json in "
     "/nowhere/student); give a folder holding a model or a hub id"),
    ("./tiny", "tokenizer", "tokenizer ./tiny is not a model folder (no config.json in {root}/tiny); give a folder "
     "holding a model or a hub id"),
    ("smollm", "--model_id", "--model_id smollm is not a model folder (no config.json in {root}/smollm); give a "
     "folder holding a model or a hub id"),
    ("models/tiny/deeper/still", "--model_id", "--model_id models/tiny/deeper/still is not a model folder (no "
     "config.json in {root}/models/tiny/deeper/still); give a folder holding a model or a hub id"),
    ("owner/name", "teacher", "teacher owner/name is neither a local folder ({root}/owner/name) nor in the hub "
     "cache, and HF_HUB_OFFLINE is set; download it first or give a local folder"),
])
def test_a_model_that_cannot_load_is_one_line_naming_where_it_came_from(repository, model_id, role, message):
    with pytest.raises(InputError) as refused:
        check_model(model_id, role)
    assert str(refused.value) == message.format(root=repository)


def test_a_hub_id_passes_where_the_hub_is_reachable_or_the_cache_holds_it(repository, tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "models--owner--name" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--owner--name" / "refs").mkdir()
    (tmp_path / "hub" / "models--owner--name" / "refs" / "main").write_text("abc")
    check_model("owner/name")  # in the cache, hub off
    monkeypatch.delenv("HF_HUB_OFFLINE")
    check_model("owner/other")  # not checked against the hub: its load says what it finds
