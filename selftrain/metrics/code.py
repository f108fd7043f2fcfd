"""Diversity of programs (docs/metrics.md, "Code"): distinct programs after normalisation,
n-gram diversity of AST node types, and behaviour classes on extra inputs.

Groups are per query. Counting figures (`distinct_programs`, `behaviour_classes`) average over
every query with at least one program in the group; on the passing group every query counts
(none passing = 0). `ast_distinct_n` averages over queries with at least 2 parsable programs.
A figure with no query to average over is None.
"""

from __future__ import annotations

import ast
from collections.abc import Hashable, Iterator, Sequence

import numpy as np


class _Renamer(ast.NodeTransformer):
    """Rename every name the program binds (arguments, assignments, loop and comprehension
    variables, inner functions) to v0, v1, ... in order of first appearance; builtins and
    other free names (sum, len) keep theirs."""

    def __init__(self, bound: set[str]) -> None:
        self.bound, self.names = bound, {}

    def _new(self, name: str) -> str:
        if name not in self.bound:
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self._new(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg = self._new(node.arg)
        node.annotation = None
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.name = self._new(node.name)
        node.returns = None
        self.generic_visit(node)
        return node


def _bound_names(tree: ast.AST) -> set[str]:
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            bound.add(node.name)
    return bound


def _drop_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]


def normalise_program(source: str) -> str:
    """The program with formatting, comments and docstrings dropped and local names renamed in
    order of appearance; a program that does not parse is its own stripped text."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return " ".join(source.split())
    _drop_docstrings(tree)
    tree = _Renamer(_bound_names(tree)).visit(tree)
    return ast.unparse(tree)


def node_types(source: str) -> list[str] | None:
    """The AST node type names of the program in pre-order (None when it does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None

    def walk(node: ast.AST) -> Iterator[str]:
        yield type(node).__name__
        for child in ast.iter_child_nodes(node):
            yield from walk(child)

    return list(walk(tree))


def distinct_n_of(sequences: Sequence[Sequence[Hashable]]) -> float | None:
    """Mean over n = 1..4 of unique / total n-grams across `sequences` (an n with none is left
    out; None when every n is)."""
    ratios = []
    for n in range(1, 5):
        grams = [tuple(s[i:i + n]) for s in sequences for i in range(len(s) - n + 1)]
        if grams:
            ratios.append(len(set(grams)) / len(grams))
    return float(np.mean(ratios)) if ratios else None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def distinct_programs(groups: Sequence[Sequence[str]], passing: bool = False) -> float | None:
    """Mean over queries of the number of distinct normalised programs."""
    counts = [len({normalise_program(p) for p in g}) for g in groups if g or passing]
    return _mean(counts)


def ast_distinct_n(groups: Sequence[Sequence[str]]) -> float | None:
    """Mean over queries with at least 2 parsable programs of `distinct_n_of` their node types."""
    values = []
    for g in groups:
        seqs = [s for s in (node_types(p) for p in g) if s is not None]
        if len(seqs) >= 2:
            value = distinct_n_of(seqs)
            if value is not None:
                values.append(value)
    return _mean(values)


def behaviour_classes(groups: Sequence[Sequence[str]], passing: bool = False) -> float | None:
    """Mean over queries of the number of distinct output vectors (each program's outputs on
    the query's extra inputs, as one string; an exception is an output)."""
    counts = [len(set(g)) for g in groups if g or passing]
    return _mean(counts)


def status_shares(statuses: Sequence[str]) -> dict[str, float | None]:
    """`exec_timeout_share`, `exec_memory_share`, `exec_error_share` of first-pass programs."""
    n = len(statuses)
    return {f"exec_{s}_share": (sum(x == s for x in statuses) / n if n else None)
            for s in ("timeout", "memory", "error")}
