"""The code a script runs: its import closure over the project's modules, read from the source with ``ast``
(nothing is imported). One computation for dvc.yaml's code deps (``videoda.dvc_deps``), the training snapshot's
key (``videoda.domain_adaptation.snapshot``) and the layering test (tests/test_architecture.py)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("videoda", "stages", "benchmarks")     # the folders whose .py files are the project's modules


def module_files(repo=REPO):
    """{module name: file} of every module under ROOTS (``stages/x.py`` is ``stages.x``, a package is its
    ``__init__.py``)."""
    out = {}
    for root in ROOTS:
        for path in sorted((Path(repo) / root).rglob("*.py")):
            parts = path.relative_to(repo).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def ancestors(module):
    """The packages above ``module``: ``a.b.c`` -> ``[a, a.b]``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_of(module, files):
    """The project modules ``module`` imports (any import statement, at any depth), each with its line number;
    importing ``a.b.c`` counts ``a`` and ``a.b`` too, as Python executes them first."""
    path = files[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((sub if sub in files else base, node.lineno))
    targets = []
    for name, line in found:
        while name and name not in files:      # `import videoda.x.y` of a name that is not a file: its module
            name = name.rpartition(".")[0]
        if not name:
            continue
        # the importer's own packages are already executing when it runs
        for target in ancestors(name) + [name]:
            if target != module and target not in ancestors(module):
                targets.append((target, line))
    return targets


def import_graph(repo=REPO):
    """The module files and {module: [(imported module, line)]} of every module under ROOTS."""
    files = module_files(repo)
    return files, {m: imports_of(m, files) for m in files}


def import_closure(script, repo=REPO):
    """The files ``python <script>`` executes from the project, sorted: the script, every module it imports,
    transitively, and each package's ``__init__.py`` on the way. Paths are relative to ``repo`` (posix), a
    script outside ``repo`` is named by its absolute path."""
    repo, path = Path(repo).resolve(), Path(script).resolve()
    files = module_files(repo)
    inside = path.is_relative_to(repo)
    start = ".".join(path.relative_to(repo).with_suffix("").parts) if inside else "__main__"
    files.setdefault(start, path)
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo += [t for t, _ in imports_of(module, files)] + [a for a in ancestors(module) if a in files]
    return sorted(files[m].relative_to(repo).as_posix() if files[m].is_relative_to(repo) else files[m].as_posix()
                  for m in seen)
