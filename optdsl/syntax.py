"""Text -> syntax tree: the Lark LALR parser of grammars/optdsl.lark and small positioned nodes.

The nodes are plain data; names, arity and types are checked later (optdsl.check).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from importlib import resources

from lark import Lark, Transformer, v_args
from lark.exceptions import (UnexpectedCharacters, UnexpectedEOF, UnexpectedInput,
                             UnexpectedToken, VisitError)

from .errors import TOO_DEEP, DSLError


@dataclass(frozen=True)
class Pos:
    line: int
    column: int


@dataclass(frozen=True)
class Num:
    value: float
    pos: Pos


@dataclass(frozen=True)
class Name:
    name: str
    pos: Pos


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple  # of expressions
    kwargs: tuple  # of (name, expr, Pos)
    pos: Pos


@dataclass(frozen=True)
class Op:
    """An operator application; ``op`` is the primitive's name (add, mul, pow, lt, ...)."""
    op: str
    args: tuple
    pos: Pos


@dataclass(frozen=True)
class Stmt:
    kind: str  # assign | state | update | return
    target: str | None
    expr: object
    pos: Pos
    stored: tuple | None = None  # (dtype name, Pos) of ``v: bfloat16 = ...``: its states' storage


@dataclass
class Program:
    """A parsed program: an optional header (name and hyperparameter defaults) and statements."""
    name: str | None
    header: tuple  # of (name, default expr, Pos); None when the program has no header
    has_header: bool
    body: list = field(default_factory=list)  # Stmt; a formula is one 'return'
    pos: Pos = Pos(1, 1)
    source: str = ""


_COMPARE = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}


def _pos(tok) -> Pos:
    return Pos(getattr(tok, "line", 1) or 1, getattr(tok, "column", 1) or 1)


@v_args(meta=True)
class _ToAst(Transformer):
    def number(self, meta, children):
        tok, pos = children[0], _pos(children[0])
        value = float(tok)
        if value == 0 and re.search(r"[1-9]", re.split(r"[eE]", str(tok))[0]):  # 1e-400
            raise DSLError(f"{tok} is too small for float64 (it reads as 0); write 0 if zero is "
                           "meant", pos.line, pos.column)
        return Num(value, pos)

    def name(self, meta, children):
        tok = children[0]
        return Name(str(tok), _pos(tok))

    def call(self, meta, children):
        func, *args = children
        pos_args, kwargs = [], []
        for a in args:
            if a is None:
                continue
            if isinstance(a, tuple) and len(a) == 3 and a[0] == "kw":
                kwargs.append(a[1:] + (a[1][1],))
            else:
                if kwargs:
                    raise DSLError("a positional argument cannot follow a keyword argument",
                                   *_at(a))
                pos_args.append(a)
        kw = tuple((name, expr, p) for (name, p), expr, _ in kwargs)
        return Call(str(func), tuple(pos_args), kw, _pos(func))

    def kwarg(self, meta, children):
        tok, expr = children
        return ("kw", (str(tok), _pos(tok)), expr)

    def _binary(op):
        def rule(self, meta, children):
            a, b = children
            return Op(op, (a, b), Pos(meta.line, meta.column))
        return rule

    add, sub, mul = _binary("add"), _binary("sub"), _binary("mul")
    div, mod = _binary("div"), _binary("mod")

    def pow(self, meta, children):
        a, _tok, b = children
        return Op("pow", (a, b), Pos(meta.line, meta.column))

    def neg(self, meta, children):
        return Op("neg", (children[0],), Pos(meta.line, meta.column))

    def compare(self, meta, children):
        a, tok, b = children
        return Op(_COMPARE[str(tok)], (a, b), _pos(tok))

    def assign(self, meta, children):
        tok, expr = children
        return Stmt("assign", str(tok), expr, _pos(tok))

    def assign_stored(self, meta, children):
        tok, dtype, expr = children
        return Stmt("assign", str(tok), expr, _pos(tok), (str(dtype), _pos(dtype)))

    def state_item(self, meta, children):
        if len(children) == 3:
            tok, dtype, expr = children
            return Stmt("state", str(tok), expr, _pos(tok), (str(dtype), _pos(dtype)))
        tok, expr = children
        return Stmt("state", str(tok), expr, _pos(tok))

    def state_decl(self, meta, children):
        return list(children)

    def update(self, meta, children):
        tok, expr = children
        return Stmt("update", str(tok), expr, _pos(tok))

    def result(self, meta, children):
        return Stmt("return", None, children[0], Pos(meta.line, meta.column))

    def block(self, meta, children):
        body = []
        for c in children:
            body.extend(c if isinstance(c, list) else [c])
        return body

    def bare_formula(self, meta, children):
        expr = children[0]
        return Program(None, (), False, [Stmt("return", None, expr, _at_pos(expr))])

    def headed_formula(self, meta, children):
        head, expr = children
        name, params = _header(head)
        return Program(name, params, True, [Stmt("return", None, expr, _at_pos(expr))], _at_pos(head))

    def headed_block(self, meta, children):
        head, body = children
        name, params = _header(head)
        return Program(name, params, True, body, _at_pos(head))

    def start(self, meta, children):
        return children[0]


def _at_pos(node) -> Pos:
    return getattr(node, "pos", Pos(1, 1))


def _at(node):
    p = _at_pos(node)
    return p.line, p.column


def _header(head):
    """``name(h=default, ...)`` or a bare ``name`` on the left of '=' or ':'."""
    if isinstance(head, Name):
        return head.name, ()
    if isinstance(head, Call):
        if head.args:
            raise DSLError(f"the header of '{head.func}' lists hyperparameters as name=default; "
                           "a bare argument is not allowed here", *_at(head.args[0]))
        return head.func, head.kwargs
    raise DSLError("a program header is a name with hyperparameters, like adam(lr=1e-3, beta1=0.9)",
                   *_at(head))


_TOKEN_NAMES = {
    "NAME": "a name", "NUMBER": "a number", "LPAR": "'('", "RPAR": "')'", "COMMA": "','",
    "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "PERCENT": "'%'", "POW": "'^'",
    "COMPARE": "a comparison", "EQUAL": "'='", "COLON": "':'", "_NL": "a new line",
    "STATE": "'state'", "RETURN": "'return'", "$END": "the end of the program",
    "<END-OF-FILE>": "the end of the program",  # lark's name where its lexer expects nothing more
    "__ANON_0": "':='", "MORETHAN": "'>'", "LESSTHAN": "'<'",
}
_END = {"$END", "<END-OF-FILE>"}

# what a text that goes on after a complete program is told
ONE_PROGRAM = ("a text holds one program: a one-line formula 'name(...) = expr' ends at its line, "
               "a block program is 'name(...):' followed by its statements")

# keywords that start a statement, and what each one does (a statement ``state = g`` is read as
# the keyword, not as a local named state)
_KEYWORDS = {"state": "state declarations ('state m = 0')",
             "return": "the program's result ('return lr * m')"}


def _ends_after_program(expected) -> bool:
    """The parser had read a complete program and expected only the end of the text."""
    return bool(expected) and set(expected) <= _END


def _keyword_as_name(text: str, tok) -> tuple | None:
    """('state' or 'return', its column) when the unexpected ``tok`` follows that keyword at the
    start of a statement and is what follows a defined name (``state = g``, ``return := g``)."""
    if str(tok) not in ("=", ":", ":="):
        return None
    lines = text.splitlines()
    if not 0 < tok.line <= len(lines):
        return None
    before = lines[tok.line - 1][:tok.column - 1]
    if before.strip() not in _KEYWORDS:
        return None
    return before.strip(), len(before) - len(before.lstrip()) + 1


def _line_after_block(text: str, line: int, column: int) -> bool:
    """The parser stopped at the start of ``line`` (at most one name in), a line that is not
    indented below a block whose statements are: it read the line as one more statement, where
    the writer likely began a second program (``lr * g``, ``adam(lr=1):``)."""
    lines = text.splitlines()
    if not 1 < line <= len(lines) or lines[line - 1][:1] in (" ", "\t", "\f"):
        return False
    if not re.fullmatch(r"([A-Za-z_][A-Za-z_0-9]*)?", lines[line - 1][:column - 1].strip()):
        return False
    code = [(i, l) for i, l in enumerate(lines[:line - 1]) if l.split("#")[0].strip()]
    if len(code) < 2 or not code[0][1].split("#")[0].rstrip().endswith(":"):
        return False
    return any(l[:1] in (" ", "\t", "\f") for _, l in code[1:])


def _non_ascii_letter_hint(ch: str) -> str:
    """For a letter outside ASCII (``β``): names are ASCII, and a Greek letter's spelling."""
    if not ch.isalpha() or ch.isascii():
        return ""
    spelled = ""
    m = re.fullmatch(r"GREEK (SMALL|CAPITAL) LETTER ([A-Z]+)", unicodedata.name(ch, ""))
    if m:
        word = {"LAMDA": "LAMBDA"}.get(m.group(2), m.group(2)).lower()
        spelled = f": write {word if m.group(1) == 'SMALL' else word.capitalize()!r} for {ch!r}"
    return f" (names are ASCII letters, digits and '_'{spelled})"


def _acceptable(e: UnexpectedToken):
    """The terminals the parser would have taken where it stopped: Lark's ``accepts()``, which
    tries each one (the state's ``expected`` holds LALR lookaheads merged from other states:
    ')' and ',' where no bracket is open)."""
    try:
        return e.interactive_parser.accepts()
    except Exception:  # an interactive parser that cannot be resumed: the state's own list
        return e.expected


def _describe_expected(expected) -> str:
    names = sorted({_TOKEN_NAMES.get(e, e) for e in expected})
    if not names:
        return ""
    if len(names) > 6:
        names = names[:6] + ["..."]
    return "; expected " + ", ".join(names)


_PARSER: Lark | None = None


def grammar_text() -> str:
    return resources.files("optdsl.grammars").joinpath("optdsl.lark").read_text()


def _parser() -> Lark:
    global _PARSER
    if _PARSER is None:
        _PARSER = Lark(grammar_text(), parser="lalr", propagate_positions=True,
                       maybe_placeholders=True, lexer="basic", postlex=_JoinBracketedLines())
    return _PARSER


class _JoinBracketedLines:
    """Lark post-lexer: a line break inside brackets continues the expression, as in Python
    (``adam(lr=1e-3,`` then ``beta1=0.95)`` on the next line)."""
    always_accept = ()  # the basic lexer reads every terminal everywhere (a contextual one
    # would need _NL accepted everywhere, which changed its parse errors after a program)

    def process(self, stream):
        depth = 0
        for tok in stream:
            if tok.type == "LPAR":
                depth += 1
            elif tok.type == "RPAR":
                depth = max(depth - 1, 0)
            elif tok.type == "_NL" and depth:
                continue
            yield tok


def parse_syntax(text: str) -> Program:
    """Parse program text into a syntax tree; any problem is a DSLError with a caret."""
    if not isinstance(text, str):
        raise DSLError(f"a program is text, not {type(text).__name__}")
    if not text.strip() or all(not l.strip() or l.strip().startswith("#") for l in text.splitlines()):
        raise DSLError("the program is empty: write a formula such as 'lr * g'", 1, 1, text)
    try:
        tree = _parser().parse(text)
        program = _ToAst().transform(tree)
    except UnexpectedCharacters as e:
        raise _unexpected_character(text, e) from None
    except UnexpectedEOF as e:
        line = text.count("\n") + 1
        raise DSLError("the program ends too early" + _describe_expected(e.expected),
                       line, len(text.splitlines()[-1]) + 1 if text.splitlines() else 1, text) from None
    except UnexpectedToken as e:
        raise _unexpected_token(text, e) from None
    except UnexpectedInput as e:  # any other lark input error
        raise DSLError(f"cannot parse: {e.__class__.__name__}", getattr(e, "line", 1),
                       getattr(e, "column", 1), text) from None
    except DSLError as e:
        raise e.with_source(text) from None
    except RecursionError:
        raise DSLError(TOO_DEEP, 1, 1, text) from None
    except VisitError as e:  # lark wraps errors raised inside the transformer
        inner = e.orig_exc
        if isinstance(inner, DSLError):
            raise inner.with_source(text) from None
        if isinstance(inner, RecursionError):
            raise DSLError(TOO_DEEP, 1, 1, text) from None
        raise
    program.source = text
    return program


def _unexpected_character(text: str, e: UnexpectedCharacters) -> DSLError:
    ch = text[e.pos_in_stream] if e.pos_in_stream is not None and e.pos_in_stream < len(text) else "?"
    hint = ""
    if ch in "'\"":
        hint = " (the language has no strings)"
    elif ch == ".":
        hint = " (the language has no attributes)"
    elif _non_ascii_letter_hint(ch):
        hint = _non_ascii_letter_hint(ch)
    elif ch in _LOOKALIKES:
        hint = f" ({unicodedata.name(ch)}): write {_LOOKALIKES[ch]!r}"
    elif not ch.isprintable() or ch.isspace():  # NBSP, zero-width space, NUL: unseen
        hint = (f" (U+{ord(ch):04X} {unicodedata.name(ch, 'a control character')}, invisible "
                "on the line below): delete it, or type a plain space")
    elif text[:e.pos_in_stream].rstrip(" \t").endswith("\n") \
            and _parses(text[:e.pos_in_stream]):  # on a line after a complete program
        hint = f" after a complete program; {ONE_PROGRAM}"
    return DSLError(f"unexpected character {ch!r}{hint}", e.line, e.column, text)


# characters that look like an operator of the language -> the operator
_LOOKALIKES = {"\u00d7": "*", "\u00b7": "*", "\u2219": "*", "\u22c5": "*", "\u2212": "-",
               "\u2013": "-", "\u2014": "-", "\u00f7": "/", "\u00b2": "^2", "\u00b3": "^3",
               "\u2264": "<=", "\u2265": ">=", "\u2260": "!="}


def _parses(text: str) -> bool:
    try:
        _parser().parse(text)
    except UnexpectedInput:
        return False
    return bool(text.strip())


def _unexpected_token(text: str, e: UnexpectedToken) -> DSLError:
    tok = e.token
    after_block = (f" (line {{}} is read as one more statement of the block above; "
                   f"{ONE_PROGRAM})")
    if tok.type == "$END":
        lines = text.rstrip("\n").splitlines() or [""]
        message = "the program ends too early" + _describe_expected(e.expected)
        if _line_after_block(text, len(lines), len(lines[-1]) + 1):
            message += after_block.format(len(lines))
        message += _unclosed_bracket(text, len(lines) + 1, 1)
        return DSLError(message, len(lines), len(lines[-1]) + 1, text)
    shown = "end of line" if tok.type == "_NL" else repr(str(tok))
    keyword = _keyword_as_name(text, tok)
    if keyword is not None:  # the caret under the keyword, the name that has to change
        word, column = keyword
        return DSLError(f"'{word}' is reserved for {_KEYWORDS[word]}: a local or a state "
                        f"cannot be named '{word}'; pick another name", tok.line, column, text)
    before = text.splitlines()[tok.line - 1][:tok.column - 1] if tok.line else ""
    if str(tok) in _COMPARISON_TOKENS and re.search(r"[<>=!]=|[<>]", before):  # a < b < c
        message = (f"unexpected {shown}: comparisons do not chain; write (a < b) * (b < c) "
                   "for 'both'")
    elif _ends_after_program(e.expected):
        message = f"unexpected {shown} after a complete program; {ONE_PROGRAM}"
    else:
        message = f"unexpected {shown}" + _describe_expected(_acceptable(e))
        if _line_after_block(text, tok.line, tok.column):
            message += after_block.format(tok.line)
        message += _unclosed_bracket(text, tok.line, tok.column)
    return DSLError(message, tok.line, tok.column, text)


_COMPARISON_TOKENS = ("<", "<=", ">", ">=", "==", "!=")


def _unclosed_bracket(text: str, line: int, column: int) -> str:
    """A hint where a '(' on a line before (``line``, ``column``) is still open there: the
    lines that follow it were read as its continuation (``_JoinBracketedLines``)."""
    opened = []
    for n, row in enumerate(text.splitlines()[:line], start=1):
        for c, ch in enumerate(row.split("#")[0], start=1):
            if (n, c) >= (line, column):
                break
            if ch == "(":
                opened.append((n, c))
            elif ch == ")" and opened:
                opened.pop()
    if opened and opened[-1][0] < line:
        return f" (the '(' at line {opened[-1][0]}, column {opened[-1][1]} is not closed)"
    return ""
