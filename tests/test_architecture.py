"""The code's layering, and dvc.yaml's code deps, checked from the source with ``ast`` (nothing is imported;
videoda.utils.code_deps reads the imports).

Layers, bottom to top: a module imports from its own layer or below, never above, and no import cycle exists,
counting imports inside functions. A module missing from ``LAYERS`` fails the test: place it consciously.
"""

import ast
import fnmatch
from pathlib import Path

import pytest
import yaml

from videoda.dvc_deps import MARKER, is_code, render
from videoda.utils.code_deps import ROOTS, import_closure, import_graph

REPO = Path(__file__).resolve().parents[1]

LAYERS = [
    ("errors", ["videoda", "videoda.errors", "videoda.numerics", "videoda.choices"]),
    ("io", ["videoda.utils", "videoda.utils.io", "videoda.utils.images", "videoda.utils.device",
            "videoda.utils.distributed", "videoda.utils.shards", "videoda.utils.machine", "videoda.utils.code_deps",
            "videoda.utils.resume", "videoda.utils.progress"]),
    ("data", ["videoda.data", "videoda.data.*"]),
    ("model and flow", ["videoda.model", "videoda.model.*", "videoda.flow", "videoda.flow.*", "videoda.metrics",
                        "videoda.evaluate", "videoda.eval_folder"]),
    ("domain adaptation", ["videoda.domain_adaptation", "videoda.domain_adaptation.*"]),
    ("config", ["videoda.config", "videoda.config.*"]),
    ("tools", ["videoda.report", "videoda.report.*", "videoda.paper_tables", "videoda.paper_tables.*",
               "videoda.segment", "videoda.cli", "videoda.__main__", "videoda.dvc_deps",
               "videoda.docs_reference"]),
    ("stages", ["stages.*", "benchmarks.*"]),
]


def layer_of(module):
    for i, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return i
    return None


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


def test_dvc_yaml_code_deps_are_current():
    text = (REPO / "dvc.yaml").read_text()
    current = render(text, REPO) == text
    assert current, "dvc.yaml's code deps are stale: run `python -m videoda deps`"


def test_no_hand_written_dep_is_a_folder_of_code():
    # a folder of modules reruns the stage on any change in it: its files come from the generated block instead
    for name, stage in dvc_stages().items():
        folders = [d for d in stage.get("deps", []) if not is_code(d) and d.split("/")[0] in ROOTS
                   and any((REPO / d).rglob("*.py"))]
        assert not folders, f"{name}: folder deps of code {folders}"


def write_project(root, files):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_import_closure_follows_every_import_with_its_packages(tmp_path):
    write_project(tmp_path, {
        "stages/s.py": "import os\nfrom videoda.pkg import a\n",
        "videoda/__init__.py": '"""Root."""\n',
        "videoda/pkg/__init__.py": '"""Pkg."""\n',
        "videoda/pkg/a.py": "def f():\n    from . import b\n",       # relative, inside a function
        "videoda/pkg/b.py": "import videoda.c\n",
        "videoda/c.py": "",
        "videoda/unused.py": "import videoda.c\n",
    })
    assert import_closure(tmp_path / "stages/s.py", tmp_path) == [
        "stages/s.py", "videoda/__init__.py", "videoda/c.py", "videoda/pkg/__init__.py", "videoda/pkg/a.py",
        "videoda/pkg/b.py"]


DVC_YAML = """# header
stages:
  first:
    cmd: python stages/s.py --out out  # the script
    deps:
      - conf          # data
      - stages/s.py
      - videoda/old.py
      - data/in
    params:
      - seed
    outs:
      - out

  # the second stage
  second:
    cmd: >-
      python stages/t.py
      --flag
    outs:
      - out2
  shell:
    cmd: cp a b
    deps:
      - a
"""


def test_the_generator_rewrites_only_the_code_block_as_the_closure_grows_and_shrinks(tmp_path):
    write_project(tmp_path, {"stages/s.py": "import videoda.a\n", "stages/t.py": "", "videoda/__init__.py": "",
                             "videoda/a.py": "", "videoda/b.py": "", "videoda/old.py": ""})
    code = "      " + MARKER + "\n"
    first = render(DVC_YAML, tmp_path)
    assert first == DVC_YAML.replace(
        "      - stages/s.py\n      - videoda/old.py\n      - data/in\n",
        "      - data/in\n" + code + "      - stages/s.py\n      - videoda/__init__.py\n      - videoda/a.py\n"
    ).replace("      --flag\n    outs:", "      --flag\n    deps:\n" + code + "      - stages/t.py\n    outs:")
    assert render(first, tmp_path) == first                                    # idempotent
    (tmp_path / "stages/s.py").write_text("import videoda.a\nimport videoda.b\n")
    grown = render(first, tmp_path)
    assert grown == first.replace("      - videoda/a.py\n", "      - videoda/a.py\n      - videoda/b.py\n")
    (tmp_path / "stages/s.py").write_text("")
    shrunk = render(grown, tmp_path)
    assert shrunk == first.replace("      - videoda/__init__.py\n      - videoda/a.py\n", "")
    assert yaml.safe_load(shrunk)["stages"]["first"]["deps"] == ["conf", "data/in", "stages/s.py"]


def test_videoda_deps_writes_dvc_yaml_and_its_check_says_whether_it_is_current(tmp_path, capsys):
    from videoda.cli import main

    write_project(tmp_path, {"stages/s.py": "", "stages/t.py": "", "videoda/old.py": "", "dvc.yaml": DVC_YAML})
    dvc_yaml = str(tmp_path / "dvc.yaml")
    assert main(["deps", "--check", "--dvc-yaml", dvc_yaml]) == 1 and (tmp_path / "dvc.yaml").read_text() == DVC_YAML
    assert "stale: run python -m videoda deps" in capsys.readouterr().out
    assert main(["deps", "--dvc-yaml", dvc_yaml]) == 0 and MARKER in (tmp_path / "dvc.yaml").read_text()
    assert main(["deps", "--check", "--dvc-yaml", dvc_yaml]) == 0


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
