"""A small mutation tester for the pure core (run it through `scripts/mutate`).

Why our own: a mutant is one small AST change (an operator swapped, a constant moved by one, a
condition negated, a returned value dropped, a slice bound removed); the module is written back
with `ast.unparse`, `pytest tests/unit -x -q` runs, and the original bytes are restored in a
`finally` (Ctrl-C and SIGTERM included). Sixty lines of operators need no dependency and work
offline; the score is over the mutants not listed as equivalent in `scripts/mutation_equivalents`.

A mutant is named `path:line:col:operator` (stable while the line does not move), e.g.
`proxy/dora.py:88:11:Lt->LtE`.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = ROOT / "scripts" / "mutation_equivalents"
MEMORY_LIMIT = 3 * 2**30  # bytes of address space per test run
# Timed on the wall clock (a ratio of two runs): on a loaded machine it can fail by itself and
# would then "kill" mutants it never checked; it also costs seconds per mutant.
TIMED_TEST = "tests/unit/test_dora.py::test_a_group_four_times_larger_costs_about_four_times_more"
DEFAULT_FILES = ("proxy/dora.py", "proxy/query.py", "proxy/days.py")

_BINOP_SWAPS: dict[type, type] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
}
_CMP_SWAPS: dict[type, type] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}


@dataclass(frozen=True, slots=True)
class Mutant:
    path: str
    index: int  # the index-th mutation point of the file, in walk order
    line: int
    col: int
    operator: str

    @property
    def name(self) -> str:
        return f"{self.path}:{self.line}:{self.col}:{self.operator}"


def _docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of docstring constants: never mutated (changing them changes nothing)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """ids of every node inside an annotation (`int | None` is a BinOp, not a computation)."""
    found: set[int] = set()

    def mark(node: ast.AST | None) -> None:
        if node is not None:
            found.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            mark(node.returns)
            for arg in (*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs):
                mark(arg.annotation)
            mark(node.args.vararg and node.args.vararg.annotation)
            mark(node.args.kwarg and node.args.kwarg.annotation)
        elif isinstance(node, ast.AnnAssign):
            mark(node.annotation)
    return found


def _all_names(tree: ast.Module) -> set[int]:
    """ids of nodes inside `__all__ = [...]`: a list of names, not behaviour."""
    found: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            found.update(id(n) for n in ast.walk(node))
    return found


def _decorators(tree: ast.AST) -> set[int]:
    """ids of nodes inside decorators (`dataclass(frozen=True, slots=True)` is class set-up)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for decorator in node.decorator_list:
                found.update(id(n) for n in ast.walk(decorator))
    return found


def _mutations(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """(operator name, replacement node) for every mutation of `node` itself."""
    if isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in _BINOP_SWAPS:
        new_op = _BINOP_SWAPS[type(node.op)]
        mutated = copy.copy(node)
        mutated.op = new_op()
        yield f"{type(node.op).__name__}->{new_op.__name__}", mutated
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _CMP_SWAPS:
                new_op = _CMP_SWAPS[type(op)]
                mutated = copy.copy(node)
                mutated.ops = [*node.ops[:i], new_op(), *node.ops[i + 1 :]]
                yield f"{type(op).__name__}->{new_op.__name__}", mutated
    elif isinstance(node, ast.BoolOp):
        mutated = copy.copy(node)
        mutated.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield f"{type(node.op).__name__}->{type(mutated.op).__name__}", mutated
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "drop-not", node.operand
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            yield f"{value}->{not value}", ast.Constant(not value)
        elif isinstance(value, int):
            yield f"{value}->{value + 1}", ast.Constant(value + 1)
            if value != 0:
                yield f"{value}->{value - 1}", ast.Constant(value - 1)
        elif isinstance(value, float):
            yield f"{value}->{value + 1}", ast.Constant(value + 1)
    elif isinstance(node, ast.Return) and node.value is not None:
        if not (isinstance(node.value, ast.Constant) and node.value.value is None):
            yield "return->None", ast.Return(ast.Constant(None))
    elif isinstance(node, ast.If | ast.While | ast.IfExp):
        mutated = copy.copy(node)
        mutated.test = ast.UnaryOp(ast.Not(), node.test)
        yield "negate-condition", mutated
    elif isinstance(node, ast.Slice):
        if node.lower is not None:
            yield "drop-slice-lower", ast.Slice(None, node.upper, node.step)
        if node.upper is not None:
            yield "drop-slice-upper", ast.Slice(node.lower, None, node.step)
    elif isinstance(node, ast.comprehension) and node.ifs:
        mutated = copy.copy(node)
        mutated.ifs = [ast.UnaryOp(ast.Not(), test) for test in node.ifs]
        yield "negate-comprehension-if", mutated


class _Mutator(ast.NodeTransformer):
    """Counts mutation points in walk order; replaces the `target`-th one (or none: -1)."""

    def __init__(self, skip: set[int], target: int = -1) -> None:
        self.skip = skip
        self.target = target
        self.count = 0
        self.points: list[tuple[int, int, str]] = []

    def generic_visit(self, node: ast.AST) -> ast.AST:
        replacement: ast.AST | None = None
        if id(node) not in self.skip:
            for operator, mutated in _mutations(node):
                line = getattr(node, "lineno", None) or getattr(node, "_line", 0)
                col = getattr(node, "col_offset", 0)
                self.points.append((line, col, operator))
                if self.count == self.target:
                    replacement = mutated
                    if hasattr(node, "lineno"):
                        ast.copy_location(replacement, node)
                self.count += 1
        node = replacement if replacement is not None else node
        return super().generic_visit(node)


def _parse(path: Path) -> tuple[ast.Module, set[int]]:
    tree = ast.parse(path.read_text())
    # comprehensions and slices have no position: lend them their parent's line
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            if not hasattr(child, "lineno"):
                child._line = getattr(parent, "lineno", getattr(parent, "_line", 0))  # type: ignore[attr-defined]
    skip = _docstring_nodes(tree) | _annotation_nodes(tree) | _all_names(tree) | _decorators(tree)
    return tree, skip


def mutants_of(path: str) -> list[Mutant]:
    tree, skip = _parse(ROOT / path)
    mutator = _Mutator(skip)
    mutator.visit(tree)
    mutants, seen = [], set()
    for index, (line, col, operator) in enumerate(mutator.points):
        name, n = operator, 1
        while (line, col, name) in seen:  # nested BinOps share a column: a+b-c
            n += 1
            name = f"{operator}#{n}"
        seen.add((line, col, name))
        mutants.append(Mutant(path, index, line, col, name))
    return mutants


def mutated_source(mutant: Mutant) -> str:
    tree, skip = _parse(ROOT / mutant.path)
    mutator = _Mutator(skip, mutant.index)
    new_tree = ast.fix_missing_locations(mutator.visit(tree))
    return ast.unparse(new_tree) + "\n"


def load_equivalents() -> dict[str, str]:
    """`name  # why` lines of scripts/mutation_equivalents."""
    equivalents = {}
    if EQUIVALENTS.exists():
        for raw in EQUIVALENTS.read_text().splitlines():
            name, _, why = raw.partition("#")
            if name.strip():
                equivalents[name.strip()] = why.strip()
    return equivalents


def _limit_memory() -> None:
    """A mutant that loops while appending (`day -= timedelta(0)`) must die of MemoryError,
    not take the machine's memory until the timeout."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_tests(command: list[str], timeout: float) -> str:
    """'survived', 'killed' or 'timeout' (a hung mutant counts as killed)."""
    try:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_limit_memory,
        )
    except OSError as error:
        sys.exit(f"cannot run {command}: {error}")
    try:
        status = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return "timeout"
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    return "survived" if status == 0 else "killed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", default=list(DEFAULT_FILES))
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--only", help="run only mutants whose name contains this text")
    parser.add_argument("--timeout", type=float, help="seconds per mutant (default: 5 × baseline)")
    parser.add_argument(
        "--no-focus",
        dest="focus",
        action="store_false",
        help="skip the first quick run of the module's own test file",
    )
    parser.add_argument("--pytest-args", default="tests/unit -x -q", help="pytest arguments")
    args = parser.parse_args()
    pytest = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--deselect", TIMED_TEST]
    command = [*pytest, *args.pytest_args.split()]
    equivalents = load_equivalents()

    mutants = [m for path in args.files for m in mutants_of(path)]
    if args.only:
        mutants = [m for m in mutants if args.only in m.name]
    if args.list:
        for m in mutants:
            flag = "  [equivalent]" if m.name in equivalents else ""
            print(f"{m.name}{flag}")
        print(f"{len(mutants)} mutants")
        return 0

    started = time.monotonic()
    if run_tests(command, timeout=600) != "survived":
        sys.exit("the unit tests fail without any mutant: fix them first")
    baseline = time.monotonic() - started
    timeout = args.timeout or max(20.0, 5 * baseline)
    print(f"baseline {baseline:.1f} s; {len(mutants)} mutants; timeout {timeout:.0f} s", flush=True)

    # SIGTERM (e.g. `timeout`, a closing terminal) unwinds like Ctrl-C, through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    originals = {path: (ROOT / path).read_bytes() for path in args.files}
    survivors: list[Mutant] = []
    equivalent_survivors: list[Mutant] = []
    killed = 0
    try:
        for number, mutant in enumerate(mutants, 1):
            target = ROOT / mutant.path
            target.write_text(mutated_source(mutant))
            try:
                # The module's own test file first: most mutants die there in a second or two;
                # a mutant it misses must still survive the whole of tests/unit to count.
                focus = sorted(
                    (ROOT / "tests" / "unit").glob(f"test_*{Path(mutant.path).stem}*.py")
                )
                outcome = "survived"
                if focus and args.focus:
                    outcome = run_tests(
                        [*pytest, *map(str, focus), "-x", "-q"],
                        timeout,
                    )
                if outcome == "survived":
                    outcome = run_tests(command, timeout)
            finally:
                target.write_bytes(originals[mutant.path])
            if outcome == "survived":
                if mutant.name in equivalents:
                    equivalent_survivors.append(mutant)
                else:
                    survivors.append(mutant)
                    print(f"SURVIVED {mutant.name}", flush=True)
            else:
                killed += 1
            if number % 25 == 0:
                print(f"... {number}/{len(mutants)}", flush=True)
    except KeyboardInterrupt:
        print("interrupted; files restored", file=sys.stderr)
        return 130
    finally:
        for path, data in originals.items():
            if (ROOT / path).read_bytes() != data:
                (ROOT / path).write_bytes(data)

    total = len(mutants)
    counted = total - len(equivalent_survivors)
    stale = sorted(set(equivalents) - {m.name for m in equivalent_survivors})
    print(
        f"\n{total} mutants in {time.monotonic() - started:.0f} s: {killed} killed, "
        f"{len(survivors)} survived, {len(equivalent_survivors)} equivalent"
    )
    for mutant in survivors:
        print(f"  survivor  {mutant.name}")
    for mutant in equivalent_survivors:
        print(f"  equivalent {mutant.name}  # {equivalents[mutant.name]}")
    for name in stale:
        if any(name.startswith(f"{path}:") for path in args.files) and not args.only:
            print(f"  listed as equivalent but killed or gone: {name}")
    score = killed / counted if counted else 1.0
    print(f"score {killed}/{counted} = {score:.1%} of non-equivalent mutants")
    return 0 if score >= 0.97 else 1


if __name__ == "__main__":
    raise SystemExit(main())
