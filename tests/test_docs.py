"""The docs stay true to the code (issue 33): the generated reference pages are current, ``mkdocs build --strict``
passes, every command in a fenced code block of README.md and docs/ is checked without running anything heavy,
the repository paths README.md and the docs name exist (or are DVC outputs), and README's headline numbers equal
the committed reports.

A failure names ``file:line`` and the reason. Commands checked (a block labelled bash, sh, shell, console or
unlabelled; ``$ `` prompts, `` # comments``, ``&&``, ``;``, ``|`` and ``\\`` continuations handled):

- ``dvc exp run ... -S key=value``: composed from conf/ with the line's overrides together (``videoda.config.compose``,
  Hydra as DVC calls it; a sweep is expanded as DVC does), every value checked (``check_params``), and each
  override's key holds the value it gave after composition;
- ``dvc repro|pull|push|fetch|checkout|status|exp run <targets>``: a stage of dvc.yaml, a path it declares, or a
  path that exists;
- ``videoda ...`` / ``python -m videoda ...``: parsed by ``videoda.cli.build_parser()`` (``params -S``: composed as
  above);
- ``python stages/x.py ...``: parsed by a parser built from the script's ``add_argument`` calls;
  ``python <other>.py``: the file exists;
- any other program must be a known shell command (``SHELL_COMMANDS``); in an unlabelled block a line that starts
  with none is text (output, a diagram) and skipped; in a console block only ``$ `` lines are commands.

README's headline table lies between ``<!-- headline: begin -->`` and ``<!-- headline: end -->`` (the convention
agreed with the docs' writers): rows ``| <model> | <mIoU> | <VPQ> |`` equal reports/scores.json to 2 decimals.
"""

import contextlib
import io
import itertools
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from videoda.cli import build_parser, main
from videoda.config.compose import GROUPS, check_params, compose_params
from videoda.config.fields import lookup
from videoda.docs_reference import (GENERATED, cell, declarations, describe_check, readers_of, script_options,
                                   script_parser, value_text, write, yaml_comments)
from videoda.errors import ParamError

REPO = Path(__file__).resolve().parents[1]
CHECKED_LANGUAGES = {"", "bash", "sh", "shell", "console"}
# programs a command may start with that the test does not check further (the shell's plumbing, installers, git)
SHELL_COMMANDS = {
    "cd", "export", "source", ".", "git", "pip", "pip3", "mkdir", "ls", "cat", "cp", "mv", "rm", "ln", "echo",
    "head", "tail", "grep", "find", "du", "df", "tar", "unzip", "wget", "curl", "sha256sum", "nvidia-smi", "sbatch",
    "srun", "salloc", "squeue", "scancel", "bash", "sh", "mkdocs", "pytest", "time", "watch", "tree", "sed", "awk",
    "sort", "uniq", "wc", "diff", "kill", "nproc", "lscpu", "ssh", "scp", "rsync", "docker", "conda", "uv",
    "python3.10", "python3.11", "python3.12", "aws", "tensorboard", "ffmpeg", "open", "xdg-open", "env", "test",
}
PREFIXES = {"time", "nohup", "sudo", "env"}          # run the command that follows
# dvc subcommands whose positional arguments are stage targets, and their options that take a value
DVC_TARGETS = {"repro": set(), "pull": {"-r", "--remote", "-j", "--jobs"}, "push": {"-r", "--remote", "-j", "--jobs"},
               "fetch": {"-r", "--remote", "-j", "--jobs"}, "checkout": set(), "status": {"-r", "--remote", "-j",
                                                                                          "--jobs"}}
EXP_RUN_VALUES = {"-S", "--set-param", "-n", "--name", "-m", "--message", "-j", "--jobs", "-C", "--copy-paths"}
DVC_OTHER = {"init", "dag", "metrics", "params", "plots", "remote", "config", "gc", "add", "import", "get", "cache",
             "version", "doctor", "queue", "stage", "ls", "ls-url", "commit", "update", "diff", "move", "remove",
             "unprotect", "destroy", "install", "exp", "check-ignore", "freeze", "unfreeze", "root", "artifacts",
             "data", "du", "studio", "completion"}
# lines a test cannot check, each with its reason: (file, the line's start) -> reason. Keep it short.
ALLOWED = {}
# the outputs DVC makes: a path under them is checked against dvc.yaml's declarations, not the disk
DVC_OUTPUT_ROOTS = ("data", "models", "reports")
# paths a stage makes while it runs and removes when done, which no DVC declaration names: the folders that a killed
# stage resumes from, <output's folder>/.snapshots/<stage>/ (videoda/utils/resume.py, SNAPSHOT_DIR)
RUN_TIME_PATHS = re.compile(r"(^|/)\.snapshots(/|$)")
# inline code in prose that is a command: checked as a block's line, unless it is an illustration (a placeholder)
INLINE_COMMAND = re.compile(r"^(dvc (repro|pull|push|exp run|status)|videoda |python -m videoda |python stages/)")
PLACEHOLDER = re.compile(r"\.\.\.|<[^<>]*>|\bkey=value\b|KEY=VALUE|\bDIR\b|\bX\b|\bN\b")


def doc_files():
    return [REPO / "README.md"] + sorted((REPO / "docs").rglob("*.md"))


def rel(path):
    return Path(path).relative_to(REPO).as_posix()


# --- fenced code blocks ------------------------------------------------------------------------------------------


FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


def code_blocks(text):
    """[(language, [(line number, line)])] of the fenced blocks of a markdown text; a block's lines lose the
    fence's indentation (a block inside a list or an admonition)."""
    blocks, current, fence = [], None, None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if current is None and m:
            fence, indent = m[2], len(m[1])
            current = (m[3].lower(), [])
        elif current is not None and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            blocks.append(current)
            current = None
        elif current is not None:
            current[1].append((number, line[indent:] if not line[:indent].strip() else line.lstrip()))
    return blocks


def logical_lines(language, lines):
    """[(line number, command text)]: ``\\`` continuations joined, ``$ `` prompts removed (in a console block only
    those lines), blank and comment lines dropped."""
    out, pending, start = [], "", None
    for number, line in lines:
        if language == "console" and not pending:
            if not line.startswith("$ "):
                continue
        if not pending:
            start = number
            line = line[2:] if line.startswith("$ ") else line
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        if text and not text.startswith("#"):
            out.append((start, text))
    return out


def simple_commands(text):
    """The simple commands of a shell line: [argv], split at ``&&``, ``||``, ``;``, ``|``, ``&``, comments and
    redirections dropped, leading ``VAR=value`` assignments and ``time``/``env``-style prefixes dropped."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, argv, tokens = [], [], list(lexer)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token and set(token) <= set(";&|"):
            commands.append(argv)
            argv = []
        elif token and set(token) <= set("<>"):
            i += 1                                   # the redirection's file
            if argv and argv[-1].isdigit():          # 2>file
                argv.pop()
        else:
            argv.append(token)
        i += 1
    commands.append(argv)
    out = []
    for argv in commands:
        while argv and (re.match(r"^[A-Za-z_]\w*=", argv[0]) or argv[0] in PREFIXES):
            argv = argv[1:]
        if argv:
            out.append(argv)
    return out


def program(word):
    """The program a word names: ``.venv/bin/dvc`` -> ``dvc``, ``python3`` -> ``python``."""
    name = word.rsplit("/", 1)[-1]
    return "python" if re.fullmatch(r"python(3(\.\d+)?)?", name) else name


# --- the checks of one command -----------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def dvc_pipeline():
    """(stage names, declared paths) of dvc.yaml."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    paths = set()
    for stage in stages.values():
        for kind in ("deps", "outs", "metrics", "plots"):
            for entry in stage.get(kind, []) or []:
                for path in (entry if isinstance(entry, dict) else {entry: None}):
                    paths.add(str(path).rstrip("/"))
    return set(stages), paths


def declared_or_exists(path):
    """A path exists in the repository, or dvc.yaml declares it, a folder above it or one below it."""
    path = path.rstrip("/").removeprefix("./")
    if (REPO / path).exists():
        return True
    _, declared = dvc_pipeline()
    return any(path == d or path.startswith(d + "/") or d.startswith(path + "/") for d in declared)


def check_targets(targets):
    stages, _ = dvc_pipeline()
    problems = []
    for target in targets:
        name = target.split(":", 1)[1] if target.startswith("dvc.yaml:") else target
        if name not in stages and not declared_or_exists(name):
            problems.append(f"{target!r} is neither a stage of dvc.yaml ({', '.join(sorted(stages))}) nor a path it "
                            f"declares or that exists")
    return problems


@lru_cache(maxsize=None)
def composed(overrides):
    """(params, None) for a tuple of overrides composed and checked, or (None, the error's line)."""
    try:
        params = compose_params(list(overrides), str(REPO / "conf"))
        check_params(params, source="conf/", conf_dir=str(REPO / "conf"), overrides=overrides)
    except ParamError as e:
        return None, str(e)
    return params, None


def override_value(override):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(override).value()


def same(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def check_overrides(overrides, queued, compose=True):
    """The problems of a set of ``-S`` overrides given together (see the module docstring); without ``compose``
    their syntax and sweeps alone (Hydra's composition takes about a second a set)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    plain = []
    for override in overrides:
        path, sep, rest = override.partition(":")
        if sep and "=" not in path and path.endswith((".yaml", ".json", ".toml", ".py")):
            if path != "params.yaml":
                return [f"-S {override}: a file other than params.yaml is not composed from conf/ (not checked)"]
            override = rest
        plain.append(override)
    try:
        parsed = OverridesParser.create().parse_overrides(plain)
    except Exception as e:                    # Hydra's grammar error: the override is not valid syntax
        return [f"-S {' -S '.join(plain)}: not a valid override ({str(e).splitlines()[0]})"]
    if any(p.is_sweep_override() for p in parsed):
        if not queued:
            return ["a sweep override (a,b or range(...)) without --queue: dvc refuses it"]
        runs = BasicSweeper.split_arguments(parsed, None)[0]
    else:
        runs = [plain]
    problems = []
    for run in itertools.islice(runs, 32) if compose else []:
        params, error = composed(tuple(run))
        if error:
            problems.append(error)
            continue
        for override in run:
            key = override.split("=", 1)[0].lstrip("+")
            if key.startswith("~") or key in GROUPS:
                continue
            value = override_value(override)
            try:
                got = lookup(params, key)
            except ParamError:
                problems.append(f"-S {override}: {key} is not in the composed params")
                continue
            if not same(got, value):
                problems.append(f"-S {override}: composed to {got!r} (replaced by a profile or method)")
    return problems


def parse_videoda(argv, compose=True):
    """The problems of a ``videoda`` argv (``build_parser().parse_args``; ``params -S`` composed)."""
    if argv and argv[-1] in ("-h", "--help"):
        return []
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args(argv)
    except SystemExit:
        return [f"videoda {' '.join(argv)}: {err.getvalue().strip().splitlines()[-1] if err.getvalue() else 'refused'}"]
    if args.command == "params":
        return check_overrides(args.set, queued=False, compose=compose)
    return []


def parse_script(path, argv):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            script_parser(REPO / path).parse_args(argv)
    except SystemExit:
        return [f"{path}: {err.getvalue().strip().splitlines()[-1]}"]
    return []


def check_dvc(argv, compose=True):
    if not argv:
        return ["dvc without a command"]
    if argv[0] == "exp" and argv[1:2] == ["run"]:
        targets, overrides, i, rest = [], [], 0, argv[2:]
        while i < len(rest):
            word = rest[i]
            if word in EXP_RUN_VALUES:
                if word in ("-S", "--set-param") and i + 1 < len(rest):
                    overrides.append(rest[i + 1])
                i += 2
                continue
            if word.startswith("--set-param="):
                overrides.append(word.split("=", 1)[1])
            elif not word.startswith("-"):
                targets.append(word)
            i += 1
        return check_targets(targets) + (check_overrides(overrides, "--queue" in rest, compose) if overrides else [])
    if argv[0] in DVC_TARGETS:
        targets, i, rest = [], 0, argv[1:]
        while i < len(rest):
            if rest[i] in DVC_TARGETS[argv[0]]:
                i += 2
                continue
            if not rest[i].startswith("-"):
                targets.append(rest[i])
            i += 1
        return check_targets(targets)
    if argv[0] in DVC_OTHER:
        return []
    return [f"dvc {argv[0]}: not a dvc command"]


def check_python(argv, compose=True):
    if argv[:2] == ["-m", "videoda"]:
        return parse_videoda(argv[2:], compose)
    if argv[:1] == ["-m"] or argv[:1] == ["-c"] or not argv:
        return []                       # python -m pytest / venv / pip, python -c
    script, args = argv[0], argv[1:]
    if not (REPO / script).is_file():
        return [f"{script}: no such file"]
    if script.startswith("stages/"):
        return parse_script(script, args)
    return []


def is_command_word(word):
    name = program(word)
    return name in {"dvc", "videoda", "python"} | SHELL_COMMANDS | PREFIXES or bool(re.match(r"^[A-Za-z_]\w*=", word)) \
        or word.startswith(("./", ".ci/", ".venv/"))


def check_command(argv, language, compose=True):
    """The problems of one simple command; None: not a command (text in an unlabelled block)."""
    name = program(argv[0])
    if "..." in argv or any(re.search(r"<[A-Za-z][^<>]*>", a) for a in argv):
        return [f"`{' '.join(argv)}`: a placeholder (... or <...>): write a concrete example"]
    if name == "dvc":
        return check_dvc(argv[1:], compose)
    if name == "videoda":
        return parse_videoda(argv[1:], compose)
    if name == "python":
        return check_python(argv[1:], compose)
    if name in SHELL_COMMANDS or name.endswith(".sh") and (REPO / argv[0]).is_file():
        return []
    if argv[0].startswith(("./", "examples/", "benchmarks/", ".ci/")):
        return [] if (REPO / argv[0]).is_file() else [f"{argv[0]}: no such file"]
    if language == "":
        return None
    return [f"`{argv[0]}`: not a command the test knows (label the block `text` if it is output, or add it to "
            f"SHELL_COMMANDS)"]


def command_problems(path, text, compose=True):
    """[(file:line, reason)] of every command of ``text`` (a markdown file's) that fails its check."""
    out = []
    for language, lines in code_blocks(text):
        if language not in CHECKED_LANGUAGES:
            continue
        for number, line in logical_lines(language, lines):
            if any(line.startswith(start) for (file, start) in ALLOWED if file == rel(path)):
                continue
            if language == "" and not is_command_word(line.split()[0]):
                continue                        # text in an unlabelled block: a diagram, output
            try:
                commands = simple_commands(line)
            except ValueError as e:             # an unclosed quote
                out.append((f"{rel(path)}:{number}", f"not a shell line ({e})"))
                continue
            for argv in commands:
                for problem in check_command(argv, language, compose) or []:
                    out.append((f"{rel(path)}:{number}", problem))
    return out


# --- repository paths in backticks -------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def top_level():
    return {p.name for p in REPO.iterdir()} | set(DVC_OUTPUT_ROOTS)


def prose(text):
    """The text of a markdown file outside fenced blocks, line by line: [(line number, line)]."""
    out, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m[2]
        elif fence is not None and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            fence = None
        elif fence is None:
            out.append((number, line))
    return out


def repo_path(span):
    """The repository path a code span names, or None: one word with a ``/``, an extension or a trailing ``/``,
    whose first folder is one of the repository's (a peer's ``davsn/...`` is not ours); no placeholder."""
    span = span.strip().removeprefix("./")
    span = re.sub(r":\d+(-\d+)?$", "", span)                    # file.py:12
    if (not span or re.search(r"[\s<>$*{}=?,;()\[\]]|://|^-|\.\.", span) or "/" not in span
            or not (span.endswith("/") or re.search(r"\.[A-Za-z0-9]+$", span))):
        return None
    return span if span.split("/")[0] in top_level() else None


def code_spans(text):
    """[(line number, text)] of the inline code spans outside fenced blocks; a span may run over a line break
    (read as a space)."""
    lines = prose(text)
    joined, starts = "", []
    for number, line in lines:
        starts.append((len(joined), number))
        joined += line + "\n"
    out = []
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", joined):
        number = max(n for offset, n in starts if offset <= m.start())
        out.append((number, " ".join(m[1].split())))
    return out


def inline_command_problems(path, text, compose=True):
    out = []
    for number, span in code_spans(text):
        if not INLINE_COMMAND.match(span) or PLACEHOLDER.search(span):
            continue
        try:
            commands = simple_commands(span)
        except ValueError as e:
            out.append((f"{rel(path)}:{number}", f"`{span}`: not a shell line ({e})"))
            continue
        for argv in commands:
            problems = fragment_problems(argv) if argv[0] != "dvc" else check_command(argv, "bash", compose)
            for problem in problems or []:
                out.append((f"{rel(path)}:{number}", f"`{span}`: {problem}"))
    return out


def fragment_problems(argv):
    """A ``videoda`` or stage-script command named in prose is often a fragment (``videoda eval --classes x``): its
    command and every option it names must exist; required options may be left out."""
    from videoda.docs_reference import subcommands

    if program(argv[0]) == "python" and argv[1:2] == ["-m"]:
        argv = argv[2:]
    if program(argv[0]) == "python":
        if not (REPO / argv[1]).is_file():
            return [f"{argv[1]}: no such file"]
        parser, args = script_parser(REPO / argv[1]), argv[2:]
    else:
        commands = subcommands(build_parser())
        if len(argv) < 2 or argv[1] not in commands:
            return [f"videoda {' '.join(argv[1:2])}: not a command ({', '.join(commands)})"]
        parser, args = commands[argv[1]], argv[2:]
    return [f"{word.split('=')[0]}: not an option of `{' '.join(argv[:2])}`" for word in args
            if word.startswith("-") and word.split("=")[0] not in parser._option_string_actions]


def path_problems(path, text):
    out = []
    for number, span in code_spans(text):
        name = repo_path(span)
        if name is None:
            continue
        if RUN_TIME_PATHS.search(name):
            ok = True
        elif name.split("/")[0] in DVC_OUTPUT_ROOTS:
            ok = declared_or_exists(name)
        else:
            ok = (REPO / name).exists()
        if not ok:
            where = "dvc.yaml does not declare it" if name.split("/")[0] in DVC_OUTPUT_ROOTS else "no such path"
            out.append((f"{rel(path)}:{number}", f"`{name}`: {where}"))
    return out


# --- README's headline ----------------------------------------------------------------------------------------------


def headline_problems(readme, scores, p_miou):
    """[reason] where README's headline block disagrees with the reports (the convention in the module docstring)."""
    text = readme.splitlines()
    try:
        begin = text.index("<!-- headline: begin -->")
        end = text.index("<!-- headline: end -->")
    except ValueError:
        return ["README.md: no `<!-- headline: begin -->` ... `<!-- headline: end -->` block"]
    problems, rows = [], 0
    for number, line in enumerate(text[begin + 1:end], begin + 2):
        if line.strip().startswith("|"):
            cells = [c.strip().strip("*`").strip() for c in line.strip().strip("|").split("|")]
            if all(re.fullmatch(r":?-+:?", c) for c in cells) or cells[0].lower() in ("model", "method"):
                continue
            model = cells[0]
            if model not in scores or len(cells) != 3:
                problems.append(f"README.md:{number}: a headline row must be | <model of reports/scores.json> | "
                                f"<mIoU> | <VPQ> |, got {line.strip()!r}")
                continue
            rows += 1
            for cell, metric in zip(cells[1:], ("mIoU", "VPQ")):
                want = f"{scores[model][metric]:.2f}"
                if cell != want:
                    problems.append(f"README.md:{number}: {model} {metric} {cell}, reports/scores.json: {want}")
        for number_text in re.findall(r"P-mIoU\s*\**\s*(\d+(?:\.\d+)?)", line):
            if number_text != f"{p_miou['p_miou']:.2f}":
                problems.append(f"README.md:{number}: P-mIoU {number_text}, reports/p_miou.json: "
                                f"{p_miou['p_miou']:.2f}")
        for number_text in re.findall(r"(\d+(?:\.\d+)?)%\s+of the target-train pixels", line):
            if number_text != f"{p_miou['proportion']:.2f}":
                problems.append(f"README.md:{number}: {number_text}% labelled, reports/p_miou.json: "
                                f"{p_miou['proportion']:.2f}")
    if not rows and not problems:
        problems.append("README.md: the headline block holds no row | <model> | <mIoU> | <VPQ> |")
    return problems


def report(problems):
    return "\n".join(f"{where}: {why}" for where, why in problems)


# --- the tests on the repository ---------------------------------------------------------------------------------


def test_reference_pages_are_current(monkeypatch):
    monkeypatch.chdir(REPO)             # the pages name conf/ and stages/ as the repository's relative paths
    stale = write("docs/reference", build_parser(), check=True)
    assert not stale, f"stale reference pages: {stale}; run python -m videoda docs"


def mkdocs_build(config, site):
    """(exit status, the warning and error lines) of ``mkdocs build --strict``. Not -q: it silences the warnings
    that --strict counts, and the build passes."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, cwd=Path(config).parent,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "WARNING" in line or "ERROR" in line]
    return done.returncode, "\n".join(lines) or done.stderr[-2000:]


def test_mkdocs_build_strict(tmp_path):
    status, output = mkdocs_build(REPO / "mkdocs.yml", tmp_path / "site")
    assert status == 0, output
    assert (tmp_path / "site" / "reference" / "params" / "index.html").is_file()


def test_mkdocs_build_fails_on_a_broken_link(tmp_path):
    shutil.copy(REPO / "mkdocs.yml", tmp_path)
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    with open(tmp_path / "docs" / "index.md", "a") as f:
        f.write("\n[a page that is not there](no-such-page.md)\n")
    status, output = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert status == 1 and "no-such-page.md" in output


def test_commands_in_the_docs():
    """Stages, paths, parsers and the overrides' syntax of every command (the quick part)."""
    problems = [p for path in doc_files() for p in command_problems(path, path.read_text(encoding="utf-8"), False)]
    assert not problems, "commands that do not work as written:\n" + report(problems)


def test_inline_commands_in_the_docs():
    problems = [p for path in doc_files()
                for p in inline_command_problems(path, path.read_text(encoding="utf-8"), False)]
    assert not problems, "commands in the text that do not work as written:\n" + report(problems)


@pytest.mark.slow
def test_overrides_in_the_docs_compose():
    """Every ``-S`` set of the commands, in blocks and in the text, composed and checked (Hydra: about a second a
    set)."""
    problems = [p for path in doc_files() for check in (command_problems, inline_command_problems)
                for p in check(path, path.read_text(encoding="utf-8"))]
    assert not problems, "overrides that do not work as written:\n" + report(problems)


def test_paths_in_the_docs_exist():
    problems = [p for path in doc_files() for p in path_problems(path, path.read_text(encoding="utf-8"))]
    assert not problems, "paths that are not there:\n" + report(problems)


def test_headline_numbers_equal_the_reports():
    problems = headline_problems((REPO / "README.md").read_text(encoding="utf-8"),
                                 json.loads((REPO / "reports/scores.json").read_text()),
                                 json.loads((REPO / "reports/p_miou.json").read_text()))
    assert not problems, "\n".join(problems)


def test_every_docs_page_is_in_nav():
    """mkdocs only informs of a page left out of nav; the layout wants every page reachable."""
    def pages(node):
        if isinstance(node, str):
            return [node]
        if isinstance(node, dict):
            return [p for v in node.values() for p in pages(v)]
        return [p for v in node for p in pages(v)]

    config = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    in_nav = set(pages(config["nav"]))
    on_disk = {p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md")}
    assert on_disk <= in_nav, f"pages not in mkdocs.yml's nav: {sorted(on_disk - in_nav)}"


# --- the checkers on hand-made cases -----------------------------------------------------------------------------


def test_code_blocks_and_logical_lines():
    text = ("x\n```bash\ndvc repro \\\n  vat  # one stage\n\n# a comment\n```\n"
            "- item\n\n    ```console\n    $ videoda eval --help\n    usage: ...\n    ```\n"
            "```text\ndvc nonsense\n```\n")
    blocks = code_blocks(text)
    assert [b[0] for b in blocks] == ["bash", "console", "text"]
    assert logical_lines("bash", blocks[0][1]) == [(3, "dvc repro    vat  # one stage")]
    assert logical_lines("console", blocks[1][1]) == [(11, "videoda eval --help")]


def test_simple_commands():
    line = "A=1 time dvc pull flow; dvc exp show --drop '^(?!a|b)' > out.txt && git push 2>/dev/null  # note"
    assert simple_commands(line) == [["dvc", "pull", "flow"], ["dvc", "exp", "show", "--drop", "^(?!a|b)"],
                                     ["git", "push"]]
    assert program(".venv/bin/python3") == "python" and program(".venv/bin/dvc") == "dvc"


def test_dvc_and_cli_checks():
    assert check_command(["dvc", "repro", "vat", "dvc.yaml:vst", "models/vat.pt", "data/prepared/source"],
                         "bash") == []
    assert "nor a path" in check_command(["dvc", "repro", "vatt"], "bash")[0]
    assert check_command(["dvc", "pull", "-r", "shared", "flow"], "bash") == []
    assert check_command(["videoda", "eval", "--pred", "p", "--gt", "g", "--out", "o.json"], "bash") == []
    assert "required" in check_command(["videoda", "eval", "--pred", "p"], "bash")[0]
    assert check_command(["python", "stages/vat.py", "--init", "m.pt"], "bash") == []
    assert "unrecognized" in check_command(["python", "stages/vat.py", "--nope"], "bash")[0]
    assert check_command(["python", "stages/nope.py"], "bash") == ["stages/nope.py: no such file"]
    assert "placeholder" in check_command(["dvc", "exp", "run", "-S", "prepare.source.root=<root>"], "bash")[0]
    assert check_command(["frobnicate"], "") is None and "not a command" in check_command(["frobnicate"], "bash")[0]


def test_override_checks():
    assert check_overrides(["vst.alpha=0.2", "profile=paper"], queued=False) == []
    assert "unknown key vst.alpah" in check_overrides(["vst.alpah=0.2"], queued=False)[0]
    assert "out of range" in check_overrides(["vst.alpha=2"], queued=False)[0]
    # a key the method fixes: check_params refuses it (one line naming the method's file)
    assert "fixes it" in check_overrides(["method=iast", "vst.alpha=0.5"], queued=False)[0]
    assert "without --queue" in check_overrides(["vst.alpha=0.2,0.5"], queued=False)[0]
    assert check_overrides(["vst.alpha=0.2,0.5"], queued=True) == []
    assert check_dvc(["exp", "run", "--queue", "-S", "vst.alpha=0.2,3"])[0].endswith("out of range [0.0, 1.0]")


def test_paths_and_headline_checkers():
    assert repo_path("videoda/cli.py") == "videoda/cli.py" and repo_path("reports/") == "reports/"
    assert repo_path("davsn/domain_adaptation/config.py") is None          # a peer's file
    assert repo_path("data/params/<stage>.json") is None and repo_path("vst.alpha") is None
    assert declared_or_exists("models/vat.pt") and declared_or_exists("data/params/")
    assert not declared_or_exists("models/nope.pt")
    scores, p = {"vat": {"mIoU": 39.1521, "VPQ": 25.3629}}, {"p_miou": 50.1277, "proportion": 80.0486}
    good = ("<!-- headline: begin -->\n| model | mIoU | VPQ^s |\n|---|---:|---:|\n| `vat` | **39.15** | 25.36 |\n"
            "P-mIoU **50.13**, 80.05% of the target-train pixels.\n<!-- headline: end -->\n")
    assert headline_problems(good, scores, p) == []
    bad = good.replace("25.36", "25.37").replace("50.13", "50.1")
    assert headline_problems(bad, scores, p) == ["README.md:4: vat VPQ 25.37, reports/scores.json: 25.36",
                                                 "README.md:5: P-mIoU 50.1, reports/p_miou.json: 50.13"]
    assert "no row" in headline_problems("<!-- headline: begin -->\n<!-- headline: end -->", scores, p)[0]


def test_yaml_comments():
    text = ("# @package _global_\n# The header,\n# two lines.\nprofile: x\n\nvst:          # section\n"
            "  alpha: 0.8   # Eq. 11\n               # continued\n  # above beta\n  beta: 0.5\n  gamma: 0\n")
    header, comments = yaml_comments(text)
    assert header == "The header, two lines."
    assert comments == {"vst": "section", "vst.alpha": "Eq. 11 continued", "vst.beta": "above beta"}


def test_reference_generator_pieces():
    assert describe_check({"kind": "int", "lo": 1, "hi": None}) == "integer >= 1"
    assert describe_check({"kind": "float", "lo": 0.0, "hi": 1.0}) == "number in [0.0, 1.0]"
    assert describe_check({"kind": "choice", "options": ("a", "b")}) == "one of `a`, `b`"
    assert describe_check({"kind": "str", "optional": True}) == "non-empty text or `null`"
    assert cell("a | b <model> `x|<y>`") == "a \\| b &lt;model> `x\\|<y>`"
    assert [value_text(v) for v in (None, [1, 2], 2.5e-4, "auto", True)] == \
        ["`null`", "`[1, 2]`", "`0.00025`", "`auto`", "`true`"]
    # stages/vat.py declares five options, every one with a literal default
    options = script_options(REPO / "stages/vat.py")
    assert [args for args, _ in options] == [["--params"], ["--init"], ["--data"], ["--out"], ["--curve"]]
    assert options[1][1]["default"] == "models/source_only.pt"
    # the validation keys a trainer reads only when it validates
    readers = readers_of(declarations()["evaluate.label_stride"])
    assert readers["evaluate"] == [None] and readers["vat"] == ["vat.validate_every"]


def test_docs_command_writes_then_checks(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "reference"
    assert main(["docs", "--check", "--out", str(out)]) == 1 and not out.exists()
    assert main(["docs", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["class-sets.md", "cli.md", "methods.md", "params.md",
                                                     "profiles.md"]
    assert all(p.read_text().startswith(GENERATED + "\n") for p in out.iterdir())
    assert main(["docs", "--check", "--out", str(out)]) == 0
    (out / "methods.md").write_text("edited by hand\n")
    capsys.readouterr()
    assert main(["docs", "--check", "--out", str(out)]) == 1
    assert f"stale: {out / 'methods.md'}" in capsys.readouterr().out
    assert (out / "methods.md").read_text() == "edited by hand\n"      # --check writes nothing
