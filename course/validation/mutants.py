"""Automated mutants of the solution regions, made with mutmut's mutation operators.

mutmut (https://github.com/boxed/mutmut) is used as a library: its libcst operators
(``mutmut.mutation.mutators``) and its node visitor (``mutmut.mutation.file_mutation``, which
skips annotations, decorators, ``len``/``isinstance`` calls and ``# pragma: no mutate`` lines)
generate every single-change mutant of the lines inside ``# BEGIN SOLUTION`` / ``# END SOLUTION``.
mutmut's own runner (trampolines, in-process pytest) is not used: each mutant is a submission
folder graded by the project's own judge, in the sandbox.

Operators kept (see :data:`OPERATORS`) are those that make a plausible slip: swapped arithmetic,
comparison and boolean operators, ``n -> n + 1``, ``True <-> False``, ``is``/``in`` negated, a
dropped ``not``/``~``, ``x += y -> x = y``, a ternary forced down one branch, changed string
literals (not error messages), swapped string methods, and one keyword argument dropped
(``dim=-1``, ``device=device``, ``dtype=...``; built on mutmut's argument removal, also for a
call's only argument, which mutmut leaves alone). Left out: mutmut's ``x = None`` assignments and
positional-argument removal or ``None`` substitution, which only make code crash (killed by any
test, they inflate the kill rate and cost grading time).

A mutant's id is ``<module>.<function>:<8 hex>``, a hash of the file, the enclosing function, the
operator, the node's code before and after, the text of its line and its rank among identical
mutants of that function: it does not change when lines above it move, and it does change when
the mutated line itself is edited (so an ``equivalent`` judgement goes stale with it).
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from course import stubs
from course.errors import CourseError

TOOL = "mutmut"
INSTALL_HINT = "pip install 'course[mutants]' (or: pip install 'mutmut>=3.8,<4')"


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str            # the solution module's file name
    function: str        # the region's enclosing function (Class.method)
    task: str
    operator: str
    line: int            # 1-based, for the report only
    code: str            # the whole mutated module
    diff: str


def require_tool() -> None:
    """Raise a CourseError naming the package when the mutation tool cannot be imported."""
    try:
        import libcst  # noqa: F401
        from mutmut.mutation import file_mutation, mutators, pragma_handling  # noqa: F401
    except ImportError as exc:
        raise CourseError(f"course validate --mutants needs the mutation testing package {TOOL!r}, which is not "
                          f"installed ({exc}); install it with: {INSTALL_HINT}") from None


def _operators() -> dict[str, tuple[type, Callable[[Any], Iterable[Any]]]]:
    import libcst as cst
    from mutmut.mutation import mutators as m

    def drop_keyword_argument(node: Any) -> Iterable[Any]:
        if len(node.args) == 1 and node.args[0].keyword is not None:   # mutmut drops only one of several
            yield node.with_changes(args=[])
            return
        for mutated in m.operator_arg_removal(node):
            if len(mutated.args) != len(node.args) - 1:
                continue                    # mutmut's arg -> None substitution: not this operator
            kept = {id(a) for a in mutated.args}
            dropped = [a for a in node.args if id(a) not in kept]
            if len(dropped) == 1 and dropped[0].keyword is not None:
                if dropped[0] is node.args[-1] and mutated.args:   # no dangling comma: f(a, b=1) -> f(a)
                    last = mutated.args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
                    mutated = mutated.with_changes(args=[*mutated.args[:-1], last])
                yield mutated

    return {
        "swap_operator": (cst.CSTNode, m.operator_swap_op),
        "number": (cst.BaseNumber, m.operator_number),
        "true_false": (cst.Name, m.operator_name),
        "is_in_break": (cst.CSTNode, m.operator_keywords),
        "drop_not": (cst.UnaryOperation, m.operator_remove_unary_ops),
        "augmented_to_plain": (cst.AugAssign, m.operator_augmented_assignment),
        "ternary_branch": (cst.IfExp, m.operator_if_exp),
        "string": (cst.BaseString, m.operator_string),
        "string_method": (cst.Call, m.operator_symmetric_string_methods_swap),
        "split_rsplit": (cst.Call, m.operator_unsymmetrical_string_methods_swap),
        "lambda_body": (cst.Lambda, m.operator_lambda),
        "dict_keyword": (cst.Call, m.operator_dict_arguments),
        "match_case": (cst.Match, m.operator_match),
        "drop_keyword_argument": (cst.Call, drop_keyword_argument),
    }


OPERATORS = ("swap_operator", "number", "true_false", "is_in_break", "drop_not", "augmented_to_plain",
             "ternary_branch", "string", "string_method", "split_rsplit", "lambda_body", "dict_keyword",
             "match_case", "drop_keyword_argument")


def generate(solutions: Path) -> list[Mutant]:
    """Every mutant of the solution regions of ``solutions/<slug>/*.py`` (deterministic order)."""
    require_tool()
    out: list[Mutant] = []
    for path in stubs.solution_files(solutions):
        out.extend(mutate_source(path.read_text(encoding="utf-8"), path.name))
    return out


def mutate_source(text: str, filename: str) -> list[Mutant]:
    """The mutants of one solution module's regions."""
    import libcst as cst
    from libcst.metadata import MetadataWrapper, PositionProvider
    from mutmut.mutation.file_mutation import MutationVisitor
    from mutmut.mutation.pragma_handling import IgnoredCode, PragmaVisitor

    regions = stubs.find_regions(text, filename)
    if not regions:
        return []
    region_of_line: dict[int, stubs.Region] = {}
    for r in regions:
        for line0 in range(r.start + 1, r.end):
            region_of_line[line0 + 1] = r          # libcst lines are 1-based
    try:
        wrapper = MetadataWrapper(cst.parse_module(text))
    except cst.ParserSyntaxError as exc:
        raise CourseError(f"{filename}: the mutation tool cannot parse it: {exc}") from None
    module = wrapper.module
    pragmas = PragmaVisitor(filename)
    wrapper.visit(pragmas)
    ignored = IgnoredCode(pragmas.no_mutate_lines, pragmas.ignore_node_lines, set())
    messages = _message_nodes(module)
    positions = wrapper.resolve(PositionProvider)
    lines = text.split("\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    seen_code = {text}
    ranks: dict[tuple[str, ...], int] = {}
    out: list[Mutant] = []
    for name, (kind, fn) in _operators().items():
        visitor = MutationVisitor([(kind, fn)], ignored, set(region_of_line))
        wrapper.visit(visitor)
        for mutation in visitor.mutations:
            original, mutated = mutation.original_node, mutation.mutated_node
            if name == "string" and id(original) in messages:
                continue                            # error-message text: equivalent by design
            pos = positions.get(original)
            if pos is None or pos.start.line not in region_of_line:
                continue
            before, after = module.code_for_node(original), module.code_for_node(mutated)
            code = _splice(text, starts, pos, before, after)
            if code is None:                        # the node's text is not its range: rebuild the module
                code = module.deep_replace(original, mutated).code
            if code in seen_code:
                continue
            try:
                compile(code, filename, "exec")
            except SyntaxError:
                continue
            seen_code.add(code)
            region = region_of_line[pos.start.line]
            key = (filename, region.function, name, before, after, lines[pos.start.line - 1].strip())
            rank = ranks.get(key, 0)
            ranks[key] = rank + 1
            digest = hashlib.sha256("\x1f".join((*key, str(rank))).encode()).hexdigest()[:8]
            mutant_id = f"{Path(filename).stem}.{region.function}:{digest}"
            out.append(Mutant(mutant_id, filename, region.function, region.task, name, pos.start.line, code,
                              unified_diff(text, code, filename, mutant_id)))
    return out


def _splice(text: str, starts: list[int], pos: Any, before: str, after: str) -> str | None:
    """``text`` with the node at ``pos`` (whose code is ``before``) replaced by ``after``; None when
    the text at that range is not exactly ``before`` (then the caller regenerates the module)."""
    begin = starts[pos.start.line - 1] + pos.start.column
    end = starts[pos.end.line - 1] + pos.end.column
    if text[begin:end] != before:
        return None
    return text[:begin] + after + text[end:]


def _message_nodes(module: Any) -> set[int]:
    """ids of the nodes inside ``raise`` and ``assert`` statements and ``warnings.warn(...)`` calls."""
    import libcst as cst
    found: set[int] = set()

    class Collect(cst.CSTVisitor):
        def _take(self, node: Any) -> bool:
            stack = [node]
            while stack:
                current = stack.pop()
                found.add(id(current))
                stack.extend(current.children)
            return False

        def visit_Raise(self, node: Any) -> bool:
            return self._take(node)

        def visit_Assert(self, node: Any) -> bool:
            return self._take(node)

        def visit_Call(self, node: Any) -> bool:
            func = node.func
            if isinstance(func, cst.Attribute) and func.attr.value == "warn":
                return self._take(node)
            return True

    module.visit(Collect())
    return found


def unified_diff(before: str, after: str, filename: str, label: str = "", context: int = 1) -> str:
    """A unified diff of two versions of a file (difflib's, without its "popular lines are junk"
    heuristic, which mangles files whose blank and marker lines repeat)."""
    a, b = before.split("\n"), after.split("\n")
    out = [f"--- a/{filename}", f"+++ b/{filename}" + (f" ({label})" if label else "")]
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for group in matcher.get_grouped_opcodes(context):
        i1, j1, i2, j2 = group[0][1], group[0][3], group[-1][2], group[-1][4]
        out.append(f"@@ -{i1 + 1},{i2 - i1} +{j1 + 1},{j2 - j1} @@")
        for tag, x1, x2, y1, y2 in group:
            if tag == "equal":
                out += [" " + line for line in a[x1:x2]]
                continue
            out += ["-" + line for line in a[x1:x2]]
            out += ["+" + line for line in b[y1:y2]]
    return "\n".join(out)


def sample(mutants: list[Mutant], limit: int, keep: set[str] = frozenset()) -> list[Mutant]:
    """At most ``limit`` mutants (0: all), spread over the tasks round-robin, chosen by a hash of
    their ids (so the same ones each run), plus every mutant whose id is in ``keep``."""
    if limit <= 0 or len(mutants) <= limit:
        return list(mutants)
    by_task: dict[str, list[Mutant]] = {}
    for m in sorted(mutants, key=lambda m: hashlib.sha256(m.id.encode()).hexdigest()):
        by_task.setdefault(m.task, []).append(m)
    chosen: list[Mutant] = []
    queues = [by_task[t] for t in sorted(by_task, key=_task_key)]
    while len(chosen) < limit and any(queues):
        for q in queues:
            if q and len(chosen) < limit:
                chosen.append(q.pop(0))
    ids = {m.id for m in chosen}
    chosen += [m for m in mutants if m.id in keep and m.id not in ids]
    order = {m.id: i for i, m in enumerate(mutants)}
    return sorted(chosen, key=lambda m: order[m.id])


def _task_key(task: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in task.split("."))
