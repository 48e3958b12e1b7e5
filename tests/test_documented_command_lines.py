"""Every command line shown in README.md, docs/*.md and deploy/README.md is one the code accepts.

``python -m tfmedseg.<module> ...`` and ``tfmedseg <command> ...`` lines go through the command's own ``main``
up to the point where it would start working: its argument parser (every option known, every value of the
right type and among the choices; ``a|b|c`` in the docs is tried with each of a, b and c) and, for an
experiment, the config it names (``--config``) with every ``--set`` override applied to the config dataclass.
Nothing is read, trained or written. ``python benchmarks/<script>.py ...`` lines: the script exists and
defines every option the line passes. The slow tests run the predict / export lines for real
(``tests/experiments/_documented.py``).
"""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")), "deploy/README.md"]
#: Placeholders of the docs -> a value the parser accepts (paths stay strings; nothing is read).
PLACEHOLDERS = {"<dataset>": "lits", "N": "4", "S": "0"}
_COMMAND = re.compile(r"(python -m tfmedseg(?:\.[\w.]+)?|python benchmarks/\w+\.py|(?<![\w./-])tfmedseg(?:-[a-z-]+)?)"
                      r"(?![\w.<-])((?:[ \t]+[^\s#][^#]*)?)")


def _code_units(text: str) -> list[tuple[int, str, bool]]:
    """``(line, text, in a code block)`` of every code-block line (``\\`` continuations joined) and every inline code span
    (one that wraps over lines joined into one line) of a Markdown page."""
    units = []

    def block(match):
        first = text[: match.start(1)].count("\n") + 1
        lines = match.group(1).split("\n")
        number, pending = first, ""
        for offset, line in enumerate(lines):
            if not pending:
                number = first + offset
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            units.append((number, pending + line, True))
            pending = ""
        return "\n" * match.group(0).count("\n")  # keep the line numbers of the rest

    prose = re.sub(r"```[^\n]*\n(.*?)```", block, text, flags=re.S)
    for match in re.finditer(r"`([^`]+)`", prose):
        units.append((prose[: match.start()].count("\n") + 1, " ".join(match.group(1).split()), False))
    return units


def documented_lines() -> list[tuple[str, str, str, bool]]:
    """``(page:line, program, arguments, in a code block)`` of every command line in the pages' code (blocks
    and inline spans)."""
    from tfmedseg.__main__ import commands

    names = set(commands())
    found = []
    for page in PAGES:
        for line, unit, block in _code_units((REPO / page).read_text()):
            for match in _COMMAND.finditer(unit):
                program, args = match.group(1), match.group(2).strip()
                if program == "tfmedseg" and (not args or not args.startswith("-") and args.split()[0] not in names):
                    continue  # the package's name, or the word "tfmedseg" in a sentence
                found.append((f"{page}:{line}", program, args, block))
    return found


def _argv_variants(args: str) -> list[list[str]]:
    """The argument strings the docs mean: ``[...]`` optional parts kept, ``a|b`` alternatives expanded
    (``...`` between them dropped), placeholders filled in."""
    args = re.sub(r"\[(--[^\]]*)\]", r"\1", args)  # [--reuse], [--config a|b] -> their content
    tokens = shlex.split(args)
    choices = []
    for token in tokens:
        token = PLACEHOLDERS.get(token, token)
        if "|" in token and not token.startswith(("'", '"')):
            options = [t for t in token.split("|") if t and t != "..."]
            choices.append(options)
        else:
            choices.append([re.sub(r"<[^>]+>", "x", token)])
    return [list(combo) for combo in itertools.product(*choices)]


#: Whether the line being checked is a fragment of prose (its command's required options may be left out).
_FRAGMENT = [False]


class _Accepted(Exception):
    """Raised where the command would start working: what it parsed (and, for an experiment, its config)."""


@pytest.fixture
def stop_after_parsing(monkeypatch, tmp_path):
    """Every ``ArgumentParser.parse_args`` stops the command right after parsing (outside the experiments; an
    experiment stops after loading its config with the overrides and checking its options, before it looks at
    --data-dir or creates its run folder) and,
    for a fragment (:data:`_FRAGMENT`), accepts a command line without its required options."""
    import tfmedseg.experiments.cli as cli

    monkeypatch.chdir(tmp_path)  # relative run folders of the docs: nothing there, nothing written
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        if _FRAGMENT[0]:
            for action in self._actions:
                action.required = False
        if any(a.dest == "overrides" for a in self._actions):  # the experiments' shared parser: go on to the config
            return original(self, args, namespace)
        raise _Accepted(original(self, args, namespace))

    def finished(output_dir, key):  # asked right after the config and the options were checked
        raise _Accepted(output_dir)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    monkeypatch.setattr(cli, "finished", finished)


def _module_main(program: str, argv: list[str]):
    """The ``main`` a documented program runs and the argv it gets."""
    import importlib

    from tfmedseg.__main__ import commands

    if program.startswith("python -m "):
        module = program.split()[-1]
        if module == "tfmedseg":
            module = "tfmedseg.__main__"
        elif module in {m for m, _ in commands().values()} or importlib.util.find_spec(module + ".__main__") is None:
            pass
        else:
            module += ".__main__"
        return importlib.import_module(module).main, argv
    scripts = {"tfmedseg": "tfmedseg.__main__", "tfmedseg-predict": "tfmedseg.predict_cli",
               "tfmedseg-export": "tfmedseg.export.__main__", "tfmedseg-phantoms": "tfmedseg.datasets.phantoms.__main__",
               "tfmedseg-liver-lesions": "tfmedseg.apps.liver_lesions", "tfmedseg-viewer": "tfmedseg.viewer.__main__"}
    return importlib.import_module(scripts[program]).main, argv


def test_the_docs_show_command_lines_of_every_kind():
    programs = {program.split()[-1].split("/")[-1] for _, program, _, _ in documented_lines()}
    for expected in ("tfmedseg.predict", "tfmedseg.export", "tfmedseg.viewer", "tfmedseg.datasets.phantoms",
                     "tfmedseg.apps.liver_lesions", "tfmedseg.experiments.liver_ct_2d3d", "tfmedseg.experiments.bone_malignet",
                     "tfmedseg.experiments.hecktor_petct", "tfmedseg.experiments.maa_spect_liver",
                     "tfmedseg.experiments.liver_lesion_fusion", "tfmedseg", "bench_training.py"):
        assert expected in programs, expected


TFMEDSEG_LINES = [entry for entry in documented_lines() if not entry[1].startswith("python benchmarks/")]


@pytest.mark.parametrize("where, program, args, block", TFMEDSEG_LINES,
                         ids=[f"{w} {p.split()[-1]}" for w, p, _, _ in TFMEDSEG_LINES])
def test_documented_tfmedseg_command_line_is_accepted(where, program, args, block, stop_after_parsing, capsys):
    # a code block's line and a line passing two or more options are whole command lines; a command's name alone
    # or with one option in a sentence (`python -m tfmedseg.viewer --port 0`) is a fragment
    _FRAGMENT[0] = not block and sum(token.startswith("--") for token in shlex.split(args)) < 2
    for argv in _argv_variants(args):
        if "--help" in argv or (program.split()[-1] == "tfmedseg" and not argv):
            continue  # tfmedseg --help: tests/test_command_listing.py
        main, argv = _module_main(program, argv)
        try:
            code = main(argv)
        except _Accepted:
            continue
        except SystemExit as exc:  # argparse: unknown option, bad value or choice
            code = exc.code
        err = capsys.readouterr().err
        raise AssertionError(f"{where}: `{program} {shlex.join(argv)}` was refused (exit {code}): {err.strip()}")


BENCH_LINES = [entry for entry in documented_lines() if entry[1].startswith("python benchmarks/")]


@pytest.mark.parametrize("where, program, args, block", BENCH_LINES,
                         ids=[f"{w} {p.split('/')[-1]}" for w, p, _, _ in BENCH_LINES])
def test_documented_benchmark_command_line_names_options_the_script_has(where, program, args, block):
    script = REPO / program.split()[-1]
    assert script.is_file(), f"{where}: {script.name} does not exist"
    source = script.read_text()
    if "add_torch_worker_options(parser" in source:  # --torch-python / --worker: declared in benchmarks/torch_worker.py
        source += (REPO / "benchmarks" / "torch_worker.py").read_text()
    for token in shlex.split(args.split(">")[0]):
        if token.startswith("--"):
            option = token.split("=")[0]
            assert f'"{option}"' in source or f"'{option}'" in source, f"{where}: {script.name} has no option {option}"


def test_every_savedmodel_the_docs_export_is_served_by_deploy_models_config():
    """A SavedModel a documented ``python -m tfmedseg.export ... --output saved_models/<name>/<v>`` line writes, and
    each experiment's own ``saved_models/<experiment>/<v>``, is a model ``deploy/models.config`` serves (TF Serving
    serves only what the config lists; ``maa_spect_liver`` used to be listed while the docs wrote ``maa_liver``)."""
    served = set(re.findall(r'name:\s*"([^"]+)"', (REPO / "deploy" / "models.config").read_text()))
    written = {"liver_ct_2d3d", "liver_lesion_fusion", "hecktor_petct", "bone_malignet"}  # the experiments' exports
    for _, program, args, _ in documented_lines():
        if program.split()[-1] != "tfmedseg.export":
            continue
        for argv in _argv_variants(args):
            fmt = argv[argv.index("--format") + 1] if "--format" in argv else "savedmodel"
            output = argv[argv.index("--output") + 1] if "--output" in argv else ""
            match = re.match(r"saved_models/([^/]+)/\d+$", output)
            if match and fmt in ("savedmodel", "all"):
                written.add(match.group(1))
    assert written - served == set(), f"written by the docs' commands but not served: {sorted(written - served)}"
    assert served - written == set(), f"served but written by nothing documented: {sorted(served - written)}"


def test_no_page_names_a_path_of_the_developers_machine():
    """The docs, README and CHANGELOG name no path under ``/work/`` (the developers' box: scratch scripts, queue
    wrappers, virtual environments a user does not have); a figure from a one-off script says so instead."""
    found = [f"{page}:{number}: {line.strip()}" for page in [*PAGES, "CHANGELOG.md"]
             for number, line in enumerate((REPO / page).read_text().splitlines(), 1) if "/work/" in line]
    assert not found, "pages naming /work/ paths:\n" + "\n".join(found)
