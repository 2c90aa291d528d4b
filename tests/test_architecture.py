"""The code's layering, and dvc.yaml's code deps, checked from the source with ``ast`` (nothing is imported).

Layers, bottom to top: a module imports from its own layer or below, never above, and no import cycle exists,
counting imports inside functions. A module missing from ``LAYERS`` fails the test: place it consciously.
"""

import ast
import fnmatch
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("videoda", "stages", "benchmarks")

LAYERS = [
    ("errors", ["videoda", "videoda.errors", "videoda.numerics"]),
    ("io", ["videoda.utils", "videoda.utils.io", "videoda.utils.images", "videoda.utils.device",
            "videoda.utils.distributed", "videoda.utils.shards", "videoda.utils.machine"]),
    ("data", ["videoda.data", "videoda.data.*"]),
    ("model and flow", ["videoda.model", "videoda.model.*", "videoda.flow", "videoda.flow.*", "videoda.metrics",
                        "videoda.evaluate", "videoda.eval_folder"]),
    ("domain adaptation", ["videoda.domain_adaptation", "videoda.domain_adaptation.*"]),
    ("config", ["videoda.config", "videoda.config.*"]),
    ("tools", ["videoda.report", "videoda.report.*", "videoda.paper_tables", "videoda.segment", "videoda.cli",
               "videoda.__main__"]),
    ("stages", ["stages.*", "benchmarks.*"]),
]


def layer_of(module):
    for i, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return i
    return None


def module_files(repo=REPO):
    """{module name: file} of every module under ROOTS (``stages/x.py`` is ``stages.x``)."""
    out = {}
    for root in ROOTS:
        for path in sorted((repo / root).rglob("*.py")):
            parts = path.relative_to(repo).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def is_package(module, files):
    return files[module].name == "__init__.py"


def ancestors(module):
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_of(module, files):
    """The project modules ``module`` imports (any statement, at any depth), each with the line it is on."""
    tree = ast.parse(files[module].read_text(), filename=str(files[module]))
    package = module if is_package(module, files) else module.rpartition(".")[0]
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
        # importing a.b.c executes a and a.b first; the importer's own packages are already executing
        for target in ancestors(name) + [name]:
            if target != module and target not in ancestors(module):
                targets.append((target, line))
    return targets


def import_graph(repo=REPO):
    files = module_files(repo)
    return files, {m: imports_of(m, files) for m in files}


def find_cycles(graph):
    """One cycle (a list of modules, first = last) per strongly connected component that has one."""
    index, low, on_stack, stack, sccs = {}, {}, set(), [], []

    def strongconnect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _ in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            sccs.append(scc)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    cycles = []
    for scc in sccs:
        members = set(scc)
        if len(scc) == 1 and not any(w == scc[0] for w, _ in graph[scc[0]]):
            continue
        start = min(scc)      # walk inside the component back to the start: a shortest cycle through it
        paths, seen = {start: [start]}, {start}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w, _ in graph[v]:
                if w == start:
                    queue = []
                    cycles.append(paths[v] + [start])
                    break
                if w in members and w not in seen:
                    seen.add(w)
                    paths[w] = paths[v] + [w]
                    queue.append(w)
    return cycles


def layering_problems(files, graph):
    problems = [f"{m} ({files[m].relative_to(REPO)}) is in no layer of LAYERS" for m in graph
                if layer_of(m) is None]
    for m, targets in sorted(graph.items()):
        for t, line in targets:
            lm, lt = layer_of(m), layer_of(t)
            if lm is not None and lt is not None and lt > lm:
                problems.append(f"{m} (layer {LAYERS[lm][0]}) imports {t} (layer {LAYERS[lt][0]}): "
                                f"{files[m].relative_to(REPO)}:{line}")
    problems += ["import cycle: " + " -> ".join(c) for c in find_cycles(graph)]
    return problems


def test_layers_have_no_back_edges_and_no_cycles():
    files, graph = import_graph()
    problems = layering_problems(files, graph)
    assert not problems, "\n".join(problems)


def test_the_checks_catch_a_back_edge_a_cycle_and_an_unplaced_module():
    files, graph = import_graph()
    graph = {m: list(t) for m, t in graph.items()}
    graph["videoda.errors"].append(("videoda.utils.device", 1))         # layer errors -> io: a back-edge and a cycle
    graph["videoda.stray"] = []
    files["videoda.stray"] = REPO / "videoda/stray.py"
    problems = "\n".join(layering_problems(files, graph))
    assert "videoda.errors (layer errors) imports videoda.utils.device (layer io)" in problems
    assert "import cycle: " in problems and "videoda.errors" in problems.split("import cycle: ")[1]
    assert "videoda.stray (videoda/stray.py) is in no layer" in problems


# --- dvc.yaml: the code deps of each stage are exactly the files its script executes -------------------------

def dvc_stages():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


PACKAGE_DATA = ("videoda/data/class_sets",)     # data shipped in the package, read by a stage: not code


def is_code_dep(dep):
    return "${" not in dep and dep not in PACKAGE_DATA and (dep.endswith(".py") or dep.split("/")[0] in ROOTS)


def script_of(stage):
    scripts = [w for w in stage["cmd"].split() if w.startswith("stages/") and w.endswith(".py")]
    assert len(scripts) == 1, stage["cmd"]
    return scripts[0]


def code_closure(script, files, graph):
    """The files Python executes for ``python <script>``: its project imports, transitively, with every
    package ``__init__.py`` on the way."""
    start = ".".join(Path(script).with_suffix("").parts)
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += [t for t, _ in graph[m]] + [a for a in ancestors(m) if a in files]
    return {files[m].relative_to(REPO).as_posix() for m in seen}


def dep_problems(stages, files, graph):
    problems = []
    for name, stage in stages.items():
        listed = {d for d in stage.get("deps", []) if is_code_dep(d)}
        needed = code_closure(script_of(stage), files, graph)
        folders = sorted(d for d in listed if (REPO / d).is_dir())
        if folders:
            problems.append(f"{name}: folder deps {folders}: list the files it executes instead")
        if sorted(needed - listed):
            problems.append(f"{name}: missing code deps {sorted(needed - listed)}")
        if sorted(listed - needed - set(folders)):
            problems.append(f"{name}: extra code deps {sorted(listed - needed - set(folders))}")
    return problems


def test_dvc_code_deps_are_exactly_what_each_stage_script_imports():
    files, graph = import_graph()
    problems = dep_problems(dvc_stages(), files, graph)
    assert not problems, "\n".join(problems)


def test_the_dep_check_catches_missing_extra_and_folder_deps():
    files, graph = import_graph()
    stages = dvc_stages()
    evaluate = stages["evaluate"]
    evaluate["deps"] = [d for d in evaluate["deps"] if d != "videoda/metrics.py"] + ["videoda/data/viper.py",
                                                                                      "videoda/flow"]
    problems = "\n".join(dep_problems({"evaluate": evaluate}, files, graph))
    assert "evaluate: missing code deps ['videoda/metrics.py']" in problems
    assert "evaluate: extra code deps ['videoda/data/viper.py']" in problems
    assert "evaluate: folder deps ['videoda/flow']" in problems


def test_stages_that_read_label_pngs_do_not_depend_on_the_dataset_readers():
    stages = dvc_stages()
    readers = {"videoda/data/viper.py", "videoda/data/cityscapes_vps.py", "videoda/data/cityscapes_seq.py",
               "videoda/data/synthia_seq.py", "videoda/data/prepare.py", "videoda/data/video.py"}
    for name in ("evaluate", "pseudo_labels", "vst", "report"):
        assert not readers & set(stages[name]["deps"]), name
    users = {name for name, s in stages.items() if "videoda/data/viper.py" in s["deps"]}
    assert users == {"synth", "prepare"}


@pytest.mark.parametrize("name", sorted(dvc_stages()))
def test_no_dvc_dep_is_an_empty_file(name):
    # DVC warns "'<file>' is empty." once per stage and per run for each empty file dep
    empty = [d for d in dvc_stages()[name].get("deps", []) if (REPO / d).is_file() and (REPO / d).stat().st_size == 0]
    assert not empty, f"{name}: empty deps {empty}"


def test_every_package_says_what_it_holds():
    for init in sorted((REPO / "videoda").rglob("__init__.py")):
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init.relative_to(REPO)} has no docstring"
