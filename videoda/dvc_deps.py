"""dvc.yaml's code deps, generated: ``python -m videoda deps`` rewrites, in each stage whose ``cmd`` runs a
project script (``python stages/x.py ...``), one marked block at the end of its ``deps``: the script's import
closure (``videoda.utils.code_deps``). Every other line of dvc.yaml (comments, data deps, params, outs, plots,
metrics) stays as it is, byte for byte; a ``.py`` file of the project listed as a dep is code and moves into the
block, so a dep written by hand there is absorbed, not duplicated."""

import re
from pathlib import Path

from videoda.errors import DataError
from videoda.utils.code_deps import ROOTS, import_closure
from videoda.utils.io import atomic_path

MARKER = "# code: the script's import closure, written by python -m videoda deps"
MARKER_START = "# code:"        # a marker line of any wording is replaced
STAGE = re.compile(r"^  ([A-Za-z0-9_-]+):\s*(#.*)?$")
KEY = re.compile(r"^    ([A-Za-z0-9_]+):")
ITEM_INDENT = "      "


def stage_script(name, cmd, repo):
    """The project script stage ``name``'s ``cmd`` runs (``python stages/x.py ...``), or None (it runs none: the
    stage keeps its deps as written)."""
    words = (" ".join(cmd) if isinstance(cmd, list) else str(cmd)).split()
    scripts = [w for w in words if w.endswith(".py") and (Path(repo) / w).is_file()]
    if len(scripts) > 1:
        raise DataError(f"dvc.yaml: stage {name}: its cmd names {len(scripts)} python scripts "
                        f"({', '.join(scripts)}): which one's imports are its code deps is ambiguous")
    return scripts[0] if scripts else None


def is_code(dep):
    """Whether a dep (its value) is a project module, i.e. belongs in the generated block."""
    return dep.endswith(".py") and "${" not in dep and dep.split("/")[0] in ROOTS


def dep_value(line):
    """The path of a ``- path  # comment`` list item."""
    return re.sub(r"\s+#.*$", "", line.strip()[1:].strip()).strip("'\"")


def _stage_spans(lines):
    """[(name, first line, end line)] of the stages under the top-level ``stages:`` key."""
    spans, top = [], None
    for i, line in enumerate(lines):
        if line and not line[0].isspace() and not line.startswith("#"):
            top = line.split(":")[0]
            if spans and spans[-1][2] is None:
                spans[-1] = (*spans[-1][:2], i)
            continue
        m = STAGE.match(line)
        if top == "stages" and m:
            if spans and spans[-1][2] is None:
                spans[-1] = (*spans[-1][:2], i)
            spans.append((m.group(1), i, None))
    if spans and spans[-1][2] is None:
        spans[-1] = (*spans[-1][:2], len(lines))
    return spans


def _render_stage(lines, code):
    """A stage's lines with its deps' code block replaced by ``code`` (a list of paths)."""
    keys = [(i, KEY.match(line).group(1)) for i, line in enumerate(lines) if KEY.match(line)]
    deps_at = next((i for i, k in keys if k == "deps"), None)
    if deps_at is None:              # no deps yet: a deps key right after the cmd
        after_cmd = next((i for i, _ in keys if i > next(i for i, k in keys if k == "cmd")), None)
        deps_at = after_cmd if after_cmd is not None else len(lines)
        while deps_at > 0 and (not lines[deps_at - 1].strip() or lines[deps_at - 1].startswith("  #")):
            deps_at -= 1         # past the blank lines and the next stage's comment
        lines = lines[:deps_at] + ["    deps:"] + lines[deps_at:]
    end = deps_at + 1
    while end < len(lines) and lines[end].startswith(ITEM_INDENT) and lines[end].strip():
        end += 1
    kept = [line for line in lines[deps_at + 1:end] if not line.strip().startswith(MARKER_START)
            and not (line.strip().startswith("- ") and is_code(dep_value(line)))]
    block = [ITEM_INDENT + MARKER] + [f"{ITEM_INDENT}- {path}" for path in code]
    return lines[:deps_at + 1] + kept + block + lines[end:]


def render(text, repo):
    """``text`` (a dvc.yaml) with each stage's code deps block written from its script's import closure."""
    import yaml

    try:
        stages = yaml.safe_load(text)["stages"]
    except (yaml.YAMLError, TypeError, KeyError) as e:
        raise DataError(f"dvc.yaml: no readable DVC stages ({type(e).__name__})") from None
    lines = text.split("\n")
    out, done = [], 0
    for name, start, end in _stage_spans(lines):
        script = stage_script(name, stages.get(name, {}).get("cmd", ""), repo)
        if script is None:
            continue
        out += lines[done:start] + _render_stage(lines[start:end], import_closure(Path(repo) / script, repo))
        done = end
    return "\n".join(out + lines[done:])


def write(dvc_yaml="dvc.yaml", check=False):
    """Rewrite ``dvc_yaml``'s code deps (or, with ``check``, only compare); returns whether they were stale."""
    path = Path(dvc_yaml)
    try:
        text = path.read_text()
    except OSError as e:
        raise DataError(f"{dvc_yaml}: cannot read it ({e.strerror})") from None
    new = render(text, path.resolve().parent)
    if new != text and not check:
        with atomic_path(path) as tmp:      # a kill mid-write never leaves a half-written dvc.yaml
            tmp.write_text(new)
    return new != text
