"""A tiny expression language for business rules: parsed here, never `eval`ed.

    rule      := "if" expr "then" assign ("else" assign)? | assign
    assign    := NAME "=" expr
    expr      := or ; or := and ("or" and)* ; and := not ("and" not)*
    not       := "not" not | compare
    compare   := sum (("<"|"<="|">"|">="|"=="|"!=") sum)?
    sum       := product (("+"|"-") product)* ; product := unary (("*"|"/"|"%") unary)*
    unary     := "-" unary | atom
    atom      := NUMBER | 'string' | "string" | true | false | NAME ("[" INT "]")?
               | ("abs"|"min"|"max") "(" expr ("," expr)* ")" | "(" expr ")"

A field is a tensor of the pipeline, one value per row ([-1] or [-1, 1]); `name[i]` is
column i of a [-1, n] tensor. Rules are checked when a pipeline is saved (`compile_rule`:
unknown fields, types, division by a literal zero) and run vectorised over the batch
(`Rule.run`); a division by a zero *value* is a 400 naming the rule at run time. Only
the rows where an `if` holds (and the right side of `and`/`or` where it matters) are
evaluated, so `if n > 0 then avg = total / n` never divides by zero.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import ModelhubError

NUM, BOOL, STR = "number", "bool", "string"
_FUNCS = {"abs": 1, "min": -1, "max": -1}
_KEYWORDS = {"if", "then", "else", "and", "or", "not", "true", "false"}
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<str>'[^'\\]*'|\"[^\"\\]*\")|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><=|>=|==|!=|[-+*/%<>=()\[\],]))"
)
MAX_LENGTH = 2000
MAX_DEPTH = 50


class RuleError(ModelhubError):
    """A rule that cannot be parsed or checked (when saved), or fails on a request."""

    status = 400
    code = "invalid_rule"


def datatype_kind(datatype: str) -> str:
    return BOOL if datatype == "BOOL" else STR if datatype == "BYTES" else NUM


@dataclass(frozen=True)
class Node:
    op: str  # num str bool field neg not and or cmp arith call
    value: Any = None
    args: tuple[Node, ...] = ()
    kind: str = NUM  # the type the node evaluates to
    integer: bool = False  # a number that stays integral


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise RuleError(f"cannot read {text[pos : pos + 20]!r} (at character {pos + 1})")
        out.append(match.group(match.lastgroup or "op"))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, text: str, fields: Mapping[str, tuple[str, int]]) -> None:
        if len(text) > MAX_LENGTH:
            raise RuleError(f"a rule is at most {MAX_LENGTH} characters")
        self.tokens = _tokens(text)
        self.pos = 0
        self.fields = fields  # name -> (kind, columns: 0 for one value per row)
        self.depth = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None:
            raise RuleError(f"the rule ends early{f'; expected {expected!r}' if expected else ''}")
        if expected is not None and token != expected:
            raise RuleError(f"expected {expected!r}, found {token!r}")
        self.pos += 1
        return token

    def done(self) -> None:
        if self.peek() is not None:
            raise RuleError(f"unexpected {self.peek()!r} after the end of the rule")

    def name(self) -> str:
        token = self.take()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token) or token in _KEYWORDS or token in _FUNCS:
            raise RuleError(f"expected a field name, found {token!r}")
        return token

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise RuleError("the rule nests too deeply")
        node = self.binary_bool("or", self.and_)
        self.depth -= 1
        return node

    def and_(self) -> Node:
        return self.binary_bool("and", self.not_)

    def binary_bool(self, word: str, below: Callable[[], Node]) -> Node:
        node = below()
        while self.peek() == word:
            self.take()
            right = below()
            for side in (node, right):
                if side.kind != BOOL:
                    raise RuleError(f"'{word}' takes conditions, not a {side.kind}")
            node = Node(word, args=(node, right), kind=BOOL)
        return node

    def not_(self) -> Node:
        if self.peek() == "not":
            self.take()
            inner = self.not_()
            if inner.kind != BOOL:
                raise RuleError(f"'not' takes a condition, not a {inner.kind}")
            return Node("not", args=(inner,), kind=BOOL)
        return self.compare()

    def compare(self) -> Node:
        left = self.sum()
        if self.peek() in ("<", "<=", ">", ">=", "==", "!="):
            op = self.take()
            right = self.sum()
            if left.kind != right.kind:
                raise RuleError(f"cannot compare a {left.kind} with a {right.kind} ({op})")
            if op not in ("==", "!=") and left.kind != NUM:
                raise RuleError(f"'{op}' compares numbers, not {left.kind}s")
            return Node("cmp", op, (left, right), kind=BOOL)
        return left

    def arith(self, ops: tuple[str, ...], below: Callable[[], Node]) -> Node:
        node = below()
        while self.peek() in ops:
            op = self.take()
            right = below()
            for side in (node, right):
                if side.kind != NUM:
                    raise RuleError(f"'{op}' takes numbers, not a {side.kind}")
            if op in ("/", "%") and right.op == "num" and right.value == 0:
                raise RuleError(f"division by zero ('{op} 0')")
            integer = node.integer and right.integer and op != "/"
            node = Node("arith", op, (node, right), kind=NUM, integer=integer)
        return node

    def sum(self) -> Node:
        return self.arith(("+", "-"), self.product)

    def product(self) -> Node:
        return self.arith(("*", "/", "%"), self.unary)

    def unary(self) -> Node:
        if self.peek() == "-":
            self.take()
            inner = self.unary()
            if inner.kind != NUM:
                raise RuleError(f"'-' takes a number, not a {inner.kind}")
            return Node("neg", args=(inner,), kind=NUM, integer=inner.integer)
        return self.atom()

    def atom(self) -> Node:
        token = self.take()
        if token == "(":
            node = self.expr()
            self.take(")")
            return node
        if token[0].isdigit() or token[0] == ".":
            integer = re.fullmatch(r"\d+", token) is not None
            return Node("num", int(token) if integer else float(token), kind=NUM, integer=integer)
        if token[0] in "'\"":
            return Node("str", token[1:-1], kind=STR)
        if token in ("true", "false"):
            return Node("bool", token == "true", kind=BOOL)
        if token in _FUNCS:
            self.take("(")
            args = [self.expr()]
            while self.peek() == ",":
                self.take()
                args.append(self.expr())
            self.take(")")
            if _FUNCS[token] != -1 and len(args) != _FUNCS[token]:
                raise RuleError(f"{token}() takes {_FUNCS[token]} argument")
            if any(a.kind != NUM for a in args):
                raise RuleError(f"{token}() takes numbers")
            return Node("call", token, tuple(args), kind=NUM, integer=all(a.integer for a in args))
        if token in _KEYWORDS or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token):
            raise RuleError(f"unexpected {token!r}")
        if token not in self.fields:
            known = ", ".join(sorted(self.fields)) or "none"
            raise RuleError(f"unknown field {token!r} (fields here: {known})")
        kind, columns = self.fields[token]
        column = None
        if self.peek() == "[":
            self.take()
            index = self.take()
            if not index.isdigit():
                raise RuleError(f"{token}[...]: expected a column number, found {index!r}")
            self.take("]")
            column = int(index)
            if columns and column >= columns:
                raise RuleError(f"{token}[{column}]: {token} has {columns} columns")
        return Node("field", (token, column), kind=kind)


@dataclass(frozen=True)
class Rule:
    """One checked rule: `target = value` where `condition` holds (everywhere without one)."""

    text: str
    condition: Node | None
    target: str
    value: Node
    else_value: Node | None

    @property
    def kind(self) -> str:
        return self.value.kind

    @property
    def integer(self) -> bool:
        return self.value.integer and (self.else_value is None or self.else_value.integer)

    def reads(self) -> set[str]:
        names: set[str] = set()
        for node in (self.condition, self.value, self.else_value):
            if node is not None:
                _collect(node, names)
        return names

    def run(self, env: dict[str, np.ndarray], rows: int) -> np.ndarray:
        everywhere = np.ones(rows, dtype=bool)
        if self.condition is None:
            return _as_column(_eval(self.value, env, everywhere, self), rows)
        holds = _as_column(_eval(self.condition, env, everywhere, self), rows).astype(bool)
        value = _as_column(_eval(self.value, env, holds, self), rows)
        if self.else_value is not None:
            other = _as_column(_eval(self.else_value, env, ~holds, self), rows)
        else:
            other = _flat(env[self.target], self.target)
        if value.dtype.kind in "OUS" or other.dtype.kind in "OUS":
            return np.where(holds, value.astype(object), other.astype(object))
        return np.where(holds, value, other)


def _collect(node: Node, names: set[str]) -> None:
    if node.op == "field":
        names.add(node.value[0])
    for arg in node.args:
        _collect(arg, names)


def compile_rule(text: Any, fields: Mapping[str, tuple[str, int]]) -> Rule:
    """A checked rule; RuleError naming the problem. `fields`: name -> (kind, columns)."""
    if not isinstance(text, str) or not text.strip():
        raise RuleError("a rule is a non-empty string such as \"if score > 0.9 then action = 'review'\"")
    parser = _Parser(text, fields)
    condition = None
    if parser.peek() == "if":
        parser.take()
        condition = parser.expr()
        if condition.kind != BOOL:
            raise RuleError(f"the condition after 'if' is a {condition.kind}, not a condition")
        parser.take("then")
    target = parser.name()
    parser.take("=")
    value = parser.expr()
    else_value = None
    if condition is not None and parser.peek() == "else":
        parser.take()
        other = parser.name()
        if other != target:
            raise RuleError(f"'then' assigns {target!r} but 'else' assigns {other!r}; assign the same field")
        parser.take("=")
        else_value = parser.expr()
        if else_value.kind != value.kind:
            raise RuleError(f"{target!r} is a {value.kind} after 'then' but a {else_value.kind} after 'else'")
    parser.done()
    if condition is not None and else_value is None:
        if target not in fields:
            raise RuleError(
                f"{target!r} is new and set only where the condition holds; add 'else {target} = ...' "
                "or set it in an earlier rule"
            )
        if fields[target][0] != value.kind:
            raise RuleError(f"{target!r} is a {fields[target][0]}; this rule assigns a {value.kind}")
    return Rule(text=text, condition=condition, target=target, value=value, else_value=else_value)


def _flat(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 2 and arr.shape[1] == 1:
        return arr[:, 0]
    if arr.ndim != 1:
        raise RuleError(f"field {name!r} has shape {list(arr.shape)}; use {name}[i] for one column")
    return arr


def _as_column(value: Any, rows: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return np.full(rows, arr.item(), dtype=object if arr.dtype.kind in "US" else arr.dtype)
    return arr


def _eval(node: Node, env: dict[str, np.ndarray], mask: np.ndarray, rule: Rule) -> Any:
    op = node.op
    if op in ("num", "str", "bool"):
        return node.value
    if op == "field":
        name, column = node.value
        arr = env[name]
        if column is not None:
            if arr.ndim != 2 or column >= arr.shape[1]:
                raise RuleError(f"rule {rule.text!r}: {name}[{column}] does not exist (shape {list(arr.shape)})")
            arr = arr[:, column]
        else:
            arr = _flat(arr, name)
        if arr.dtype.kind == "S":
            arr = arr.astype(object)
        return arr
    if op == "neg":
        return -np.asarray(_eval(node.args[0], env, mask, rule))
    if op == "not":
        return np.logical_not(_eval(node.args[0], env, mask, rule))
    if op in ("and", "or"):
        left = np.asarray(_eval(node.args[0], env, mask, rule), dtype=bool)
        # The right side matters only where the left did not decide (so a guard protects it).
        where = mask & (left if op == "and" else ~left) if left.ndim else mask
        right = np.asarray(_eval(node.args[1], env, where, rule), dtype=bool)
        return (left & right) if op == "and" else (left | right)
    if op == "cmp":
        left, right = (_eval(a, env, mask, rule) for a in node.args)
        return {
            "<": np.less,
            "<=": np.less_equal,
            ">": np.greater,
            ">=": np.greater_equal,
            "==": np.equal,
            "!=": np.not_equal,
        }[node.value](left, right)
    if op == "call":
        values = [np.asarray(_eval(a, env, mask, rule)) for a in node.args]
        if node.value == "abs":
            return np.abs(values[0])
        reduce = np.minimum if node.value == "min" else np.maximum
        out = values[0]
        for value in values[1:]:
            out = reduce(out, value)
        return out
    left = np.asarray(_eval(node.args[0], env, mask, rule))
    right = np.asarray(_eval(node.args[1], env, mask, rule))
    sign = node.value
    if sign in ("/", "%"):
        zero = (right == 0) & mask if right.ndim else (mask if right == 0 else np.zeros_like(mask))
        if np.any(zero):
            row = int(np.argmax(zero))
            raise RuleError(f"rule {rule.text!r}: division by zero in row {row}", code="rule_failed")
        safe = np.where(right == 0, 1, right) if right.ndim else right
        if sign == "/":
            return np.true_divide(left, safe)
        return np.mod(left, safe)
    return {"+": np.add, "-": np.subtract, "*": np.multiply}[sign](left, right)
