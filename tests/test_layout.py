"""The package layout's import rules, read with ast (imports inside functions count too).

- no import cycle among the modules of dfl_jax/ and input_pipeline/, directly or through others;
- the network (every module that defines a flax.linen Module) reaches no training, evaluation,
  serving, weight-file or tool module;
- the command-line entry modules are imported by no module and no test;
- at most 8 project imports sit inside functions (optional dependencies may stay lazy);
- configs/ imports no library code.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("dfl_jax", "input_pipeline")
UPPER = ("dfl_jax.training", "dfl_jax.evaluation", "dfl_jax.serving", "dfl_jax.weights",
         "dfl_jax.tools", "dfl_jax.workdir")
ENTRIES = tuple(f"dfl_jax.{n}" for n in (
    "evaluate", "predict", "export", "bench", "aot", "doctor", "summary", "convert_resnet",
    "pretrained_encoder", "correct_pose", "crossdomain", "shapes")) + (
        "input_pipeline.build", "input_pipeline.synthetic", "input_pipeline.bench")
MAX_FUNCTION_LEVEL = 8


def _name(path):
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
  return {_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def _imports(path, modules):
  """(project modules imported, how many of those imports sit inside a function)."""
  name = _name(path)
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found, inside = set(), 0

  def resolve(target):
    while target and target not in modules:
      target = target.rpartition(".")[0]
    return target

  def visit(node, in_function):
    nonlocal inside
    for child in ast.iter_child_nodes(node):
      targets = []
      if isinstance(child, ast.Import):
        targets = [a.name for a in child.names]
      elif isinstance(child, ast.ImportFrom):
        base = child.module or ""
        if child.level:
          up = package.split(".")[:len(package.split(".")) - child.level + 1]
          base = ".".join(up + ([base] if base else []))
        targets = [base] + [f"{base}.{a.name}" for a in child.names]
      hits = {resolve(t) for t in targets if t.split(".")[0] in PACKAGES} - {"", name}
      found.update(hits)
      inside += bool(hits) and in_function
      visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

  visit(ast.parse(path.read_text(encoding="utf-8")), False)
  return found, inside


def _graph():
  modules = _modules()
  graph, inside = {}, 0
  for name, path in modules.items():
    deps, n = _imports(path, modules)
    if path.name == "__init__.py":  # a package importing its own children is no cycle
      deps = {d for d in deps if not d.startswith(name + ".")}
    graph[name], inside = deps, inside + n
  return modules, graph, inside


def _reach(graph, start):
  seen, todo = set(), list(graph[start])
  while todo:
    m = todo.pop()
    if m not in seen:
      seen.add(m)
      todo.extend(graph.get(m, ()))
  return seen


def _is_network(path):
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.ClassDef) and any(
        ast.unparse(b) in ("nn.Module", "linen.Module", "flax.linen.Module") for b in node.bases):
      return True
  return False


def test_no_import_cycle():
  _, graph, _ = _graph()
  cycles = sorted(m for m in graph if m in _reach(graph, m))
  assert not cycles, f"modules on an import cycle: {cycles}"


def test_the_network_reaches_nothing_above_it():
  modules, graph, _ = _graph()
  network = [m for m, p in modules.items() if _is_network(p)]
  assert "dfl_jax.network.model" in network and "dfl_jax.network.decoder" in network
  for m in network:
    assert m.startswith("dfl_jax.network."), f"{m} defines a Flax module outside network/"
    bad = sorted(d for d in _reach(graph, m) if d.startswith(UPPER))
    assert not bad, f"{m} reaches {bad}"


def test_entry_modules_are_imported_by_nobody_and_function_imports_are_few():
  modules, graph, inside = _graph()
  assert set(ENTRIES) <= set(modules)
  for m, deps in graph.items():
    assert not set(deps) & set(ENTRIES), f"{m} imports the entry module(s) {deps & set(ENTRIES)}"
  for test in (ROOT / "tests").glob("*.py"):
    deps, _ = _imports(test, modules)
    assert not deps & set(ENTRIES), f"{test.name} imports {deps & set(ENTRIES)}"
  assert inside <= MAX_FUNCTION_LEVEL, f"{inside} project imports inside functions"


def test_configs_import_no_library_code():
  modules = _modules()
  for path in (ROOT / "configs").glob("*.py"):
    deps, _ = _imports(path, modules)
    assert not deps, f"{path.name} imports {sorted(deps)}"
