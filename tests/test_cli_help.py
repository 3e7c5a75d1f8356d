"""Every entry point answers --help with its flags, from any directory, without a traceback; every command line the
README, the docs and the scripts' usage lines show gives only flags its script takes."""

import subprocess
import sys

import pytest

from conftest import REPO, run_script

SCRIPTS = {
    "a-generate-synthetic-training-data/synthetic-0-select-notes.py": ["--source", "--num_notes", "--exclude_subjects"],
    "a-generate-synthetic-training-data/synthetic-e-convert-peft.py": ["--adapter_dir", "--base_model_id", "--dtype"],
    "a-generate-synthetic-training-data/synthetic-b2-verify.py": ["--model_id", "--num_items", "--engine"],
    "finetune.py": ["--model_id", "--input_file", "--min_difficulty", "--max_seq_length"],
    "eval-inference.py": ["--model_id", "--dataset_name", "--input_file", "--num_inference", "--chunk_size"],
    "extract.py": ["--criteria", "--notes", "--model_id", "--num_notes", "--fuzzy_threshold", "--engine"],
}
MODULES = {
    "simulation.samples": ["--output_dir", "--seed"],
    "clinical_distil.default_model": ["--output_dir", "--tiny"],
}


# what fire's help pages print around the flags (and short flags such as -i that the command line refuses)
FIRE_NOISE = ("INFO: Showing help", "NAME\n", "SYNOPSIS", "DESCRIPTION\n", "FLAGS\n", "Type: ", "Default: ",
              "<flags>", "-i, ", "-d, ", "-v, ")


def assert_clean_help(result, flags):
    """--help answers on stdout alone: a usage line, then each flag at the start of its own line."""
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith("usage: ") and "\nflags:\n" in result.stdout, result.stdout[:500]
    assert not [noise for noise in FIRE_NOISE if noise in result.stdout], result.stdout[:2000]
    lines = result.stdout.splitlines()
    for flag in flags:
        assert any(line.startswith(f"  {flag} ") for line in lines), flag


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_help(script, tmp_path):
    result = run_script(script, "--help", cwd=tmp_path)
    assert_clean_help(result, SCRIPTS[script])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_help(module, tmp_path):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPO)
    assert_clean_help(result, MODULES[module])


def test_help_gives_each_flag_its_value_help_and_default():
    """Each declared setting of a script, as its help page shows it: the flag and what it takes, then its help
    and default (wrapped); -h asks the same."""
    from clinical_distil.stages import FinetuneSettings

    result = run_script("finetune.py", "-h")
    page = result.stdout
    assert page.startswith("usage: finetune.py [--FLAG VALUE ...]\n\nQLoRA supervised fine-tuning")
    assert "  --input_file {all,bool,bool_num}\n      dataset combination: all, bool or bool_num (default 'all')\n" \
        in page
    assert "  --max_seq_length N\n      longest training example in tokens" in page
    assert "  --load_in_4bit true|false|None\n" in page and "  --overwrite [true|false]\n" in page
    assert "  --num_train_epochs X\n" in page and "  --data_dir TEXT|None\n" in page
    flags = [line.split()[0] for line in page.splitlines() if line.startswith("  --")]
    assert flags == [f"--{name}" for name in FinetuneSettings.names()]


def test_help_of_a_script_of_several_commands_lists_them_and_each_has_its_own():
    listing = run_script("bench/gpu_throughput.py", "--help")
    assert listing.returncode == 0 and listing.stderr == ""
    assert listing.stdout.startswith("usage: gpu_throughput.py COMMAND [--FLAG VALUE ...]")
    assert [line.strip() for line in listing.stdout.splitlines() if line.startswith("  ") and not
            line.startswith("    ")] == ["build", "run", "notes", "cli", "table"]
    table = run_script("bench/gpu_throughput.py", "table", "--help")
    assert table.stdout.startswith("usage: gpu_throughput.py table [--FLAG VALUE ...]")
    assert "  --path TEXT\n" in table.stdout and table.stderr == ""


@pytest.mark.parametrize("script, arguments, message", [
    ("bench/decode_loop.py", ["--workloads", "eval"], "unknown flag --workloads; did you mean --workload?"),
    ("bench/decode_loop.py", ["--notes", "two"], "--notes must be a whole number, got 'two'"),
    ("bench/finetune_speed.py", ["--train_exampels", "4"], "unknown flag --train_exampels; did you mean --train_examples?"),
    ("bench/generation_speed.py", ["--bogus", "1"], "unknown flag --bogus"),
    ("bench/compare_engines.py", ["--first", "a", "--second", "b", "--model", "m", "--tokens", "x"],
     "--tokens must be a whole number, got 'x'"),
    ("bench/compare_engines.py", ["a", "b"], "unexpected argument 'a': every setting is given by name"),
    ("bench/gpu_throughput.py", ["table", "--bogus", "1"], "unknown flag --bogus"),
    ("bench/finetune_speed.py", ["--configs", "fastest"], "--configs: unknown configuration(s) ['fastest']; choose "
     "from paper, fast_4bit, fast_bf16, paper_seed_43, paper_fused, paper_compiled, fast_bf16_compiled, "
     "fast_4bit_compiled, packed_bf16"),
    ("bench/finetune_speed.py", ["--processes", "1,x"], "--processes takes GPU counts of at least 1"),
    ("bench/finetune_speed.py", ["--launchers", "ddp,slurm"],
     "--launchers: unknown launcher(s) ['slurm']; choose from ddp, deepspeed"),
    ("bench/finetune_speed.py", ["--shortest_example", "2000", "--longest_example", "1700"],
     "--shortest_example 2000 and --longest_example 1700: give 0 < shortest <= longest"),
    ("bench/finetune_profile.py", ["--stepz", "3"], "unknown flag --stepz; did you mean --steps?"),
    ("bench/finetune_profile.py", ["--shortest_example", "0"],
     "--shortest_example 0 and --longest_example 4000: give 0 < shortest <= longest"),
    ("bench/finetune_profile.py", ["--python_steps", "-1"], "--python_steps must be 0 (no cProfile) or more, got -1"),
    ("bench/finetune_profile.py", ["--sync_steps", "2"],
     "--sync_steps 2: give 0, or a number of steps on a machine with CUDA"),
    ("bench/finetune_profile.py", ["--optim", "sgd"], "--optim must be one of paged_adamw_8bit, adamw_8bit, "
     "paged_adamw_32bit, adamw_torch_fused, adamw_torch, got 'sgd'"),
    ("bench/vllm_start.py", ["--modes", "eager,cached"], "--modes: unknown mode(s) ['cached']; choose from "
     "compiled_cold, compiled_warm, graphs, eager, eager_two_process"),
])
def test_bench_scripts_refuse_bad_flags_in_one_line_before_any_work(script, arguments, message, tmp_path):
    """The benchmarks check their flags like the stages (one command of several: that command's flags)."""
    result = run_script(script, *arguments, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr



DOCUMENTS = ["README.md", *sorted(str(path.relative_to(REPO)) for path in (REPO / "docs").glob("*.md"))]
SCRIPT_FOLDERS = (".", "a-generate-synthetic-training-data", "bench", "experiments")


def documented_commands() -> list[tuple[str, str, str]]:
    """(where, file run, the rest of its command line) for every command the README, the docs and the scripts'
    usage docstrings show: fenced shell blocks and docstrings (continuation lines joined) and inline code spans
    that give a script or notebook its flags."""
    import ast
    import re

    sources = {}
    for document in DOCUMENTS:
        text = (REPO / document).read_text()
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        sources[document] = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S) + [
            " ".join(span.split()) for span in re.findall(r"`([^`]*\.(?:py|ipynb) [^`]*)`", prose)]
    for folder in SCRIPT_FOLDERS:
        for script in sorted((REPO / folder).glob("*.py")):
            docstring = ast.get_docstring(ast.parse(script.read_text())) or ""
            sources[str(script.relative_to(REPO))] = [docstring]
    commands = []
    for where, parts in sources.items():
        for line in (line for part in parts for line in re.sub(r"\\\n\s*", " ", part).splitlines()):
            found = re.search(r"((?:[\w.-]+/)*[\w.-]+\.(?:py|ipynb))\b(.*)", line.split(" #")[0])
            if found and (REPO / found.group(1)).is_file():
                commands.append((where, found.group(1), found.group(2)))
    return commands


def notebook_parameters(notebook: str) -> set[str]:
    """The names a notebook's papermill `parameters` cell assigns."""
    import ast
    import json

    cells = json.loads((REPO / notebook).read_text())["cells"]
    source = next("".join(cell["source"]) for cell in cells if "parameters" in cell["metadata"].get("tags", []))
    return {target.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


def help_flags(script: str, rest: str, pages: dict) -> set[str]:
    """The flags a script's --help lists; for a script of several commands, those of the command `rest` starts
    with (an unknown command lists none)."""
    if script not in pages:
        pages[script] = run_script(script, "--help").stdout
    page = pages[script]
    if " COMMAND " in page.partition("\n")[0]:
        words = rest.split()
        command = words[0] if words else ""
        if (script, command) not in pages:
            known = command and f"\n  {command}\n" in page
            pages[(script, command)] = run_script(script, command, "--help").stdout if known else ""
        page = pages[(script, command)]
    return {line.split()[0][2:] for line in page.splitlines() if line.startswith("  --")}


def test_every_flag_the_readme_docs_and_usage_lines_give_a_command_is_one_it_takes():
    """A documented command line stays true to the code: each --flag given to a script (or to its command) is on
    that --help page, each -p given to a notebook is a name its parameters cell assigns."""
    import re

    commands = documented_commands()
    scripts = {script for _, script, _ in commands}
    assert {"finetune.py", "eval-inference.py", "extract.py", "run-pipeline.py", "experiments/known_answer.py",
            "bench/gpu_throughput.py", "bench/finetune_speed.py"} <= scripts
    assert any(script.endswith(".ipynb") and "-p " in rest for _, script, rest in commands)
    pages: dict = {}
    unknown = []
    for where, script, rest in commands:
        if script.endswith(".py"):
            given = re.findall(r"(?<!\S)--([A-Za-z_][\w-]*)", rest)
            known = help_flags(script, rest, pages) | {"help"} if given else set()
            missing = [flag for flag in given if flag not in known]
        else:
            missing = [name for name in re.findall(r"(?<!\S)-p\s+(\w+)", rest) if name not in
                       notebook_parameters(script)]
        unknown += [(where, script, name) for name in missing]
    assert unknown == []
