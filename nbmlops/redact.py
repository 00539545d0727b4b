"""Keeps secrets out of the tracking store: every param, tag, artifact and log line passes here.

Two defences work together:

* by **name**: :func:`is_secret_name` decides whether a variable, parameter, environment variable
  or query parameter name looks like it holds a secret (its value is then replaced whole);
* by **value**: a :class:`Redactor` remembers the secret values it has seen (in the user's
  namespace, the environment, the cell's source, ``name=value`` options of magics such as
  ``%%track --tag api_key=...``) and scrubs them from any text, wherever they appear;
* by **shape**: :func:`redact_text` replaces well-known token formats even when their value was
  never seen (GitHub, OpenAI, AWS access key ids, Slack, Hugging Face, Google API keys, JWTs, PEM
  private keys) and removes credentials from URIs (:func:`redact_uri`).

When in doubt a name counts as secret: a redacted harmless value costs a little context, a leaked
token costs a rotation.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import threading
import warnings
from collections.abc import Iterator, Mapping
from urllib.parse import quote, unquote

__all__ = ["MIN_SECRET_LENGTH", "REDACTED", "Redactor", "is_secret_name", "redact_text", "redact_uri", "strip_userinfo"]

REDACTED = "***"
MIN_SECRET_LENGTH = 6
"""Values shorter than this are never learned: scrubbing them would mangle ordinary text."""

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_SECRET_WORDS = frozenset(
    {
        "auth", "authorization", "bearer", "cookie", "cookies", "cred", "creds", "credential",
        "credentials", "dsn", "jwt", "oauth", "passphrase", "passwd", "password", "passwords",
        "private", "pwd", "secret", "secrets", "signature",
    }
)  # fmt: skip
_SECRET_FRAGMENTS = (
    "accesskey", "apikey", "connectionstr", "connstr", "credential", "passwd", "password",
    "privatekey", "secret", "sessionid",
)  # fmt: skip
_CREDENTIAL_OWNERS = frozenset(
    {"access", "api", "auth", "client", "encryption", "master", "refresh", "session", "signing",
     "ssh"}
)  # fmt: skip
_KEY_NOT_SECRET_BEFORE = frozenset(
    {
        "cache", "cell", "column", "composite", "dict", "foreign", "group", "hash", "index",
        "join", "label", "lookup", "merge", "metric", "param", "partition", "primary", "prng",
        "random", "rng", "row", "run", "shard", "sort", "unique",
    }
)  # fmt: skip
_KEY_NOT_SECRET_AFTER = frozenset(
    {"col", "cols", "column", "columns", "field", "fields", "fn", "frame", "frames", "func", "name",
     "names", "point", "points", "type", "word", "words"}
)  # fmt: skip
_TOKEN_NOT_SECRET_BEFORE = frozenset(
    {"bos", "cls", "end", "eos", "mask", "max", "min", "n", "num", "pad", "sep", "special", "start",
     "stop", "unk"}
)  # fmt: skip
_TOKEN_NOT_SECRET_AFTER = frozenset(
    {"count", "counts", "dim", "embedding", "embeddings", "id", "ids", "index", "len", "length",
     "limit", "size", "type", "types"}
)  # fmt: skip
_ENV_NOT_SECRET = frozenset({"PWD", "OLDPWD"})
"""Set by every POSIX shell to working directories; learning them would scrub every path."""

_USERINFO = re.compile(r"://[^\s/?#\"'<>`]+@")
#: well-known token formats, redacted wherever they appear (their names may say nothing)
_TOKEN_SHAPES = re.compile(
    "|".join(
        (
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,255})\b",  # GitHub
            r"\bsk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}",  # OpenAI, Anthropic
            r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",  # AWS key ids
            r"\bxox[abposr]-[A-Za-z0-9-]{10,}",  # Slack
            r"\bhf_[A-Za-z0-9]{30,}\b",  # Hugging Face
            r"\bAIza[0-9A-Za-z_-]{35}\b",  # Google API keys
            r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWTs
        )
    )
)
#: ``name=value`` options in magic and shell lines (``%%track --tag api_key=...``, ``!cmd password=...``)
_OPTION = re.compile(r"""(?P<name>[A-Za-z_][\w.-]*)=(?P<value>"[^"]*"|'[^']*'|[^\s"']+)""")
_QUERY_PARAM = re.compile(r"([?&])([^\s=&#?\"'<>`]+)=([^\s&#\"'<>`]+)")
_NEWLINE = re.compile(r"\r\n|\r|\n")
_STRING_LITERAL = re.compile(r"[rRbBuUfF]{0,2}['\"]")
_MAX_REPAIRS = 20
_MAX_DEPTH = 2
_MAX_CONTAINER = 256


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a value called ``name`` should be treated as a secret.

    The name is split into lower-case words on every non-alphanumeric character (``_ - . space``
    and others) and on camelCase boundaries (``apiKey``, ``APIKey`` -> ``api``, ``key``). It is
    secret when any word

    * is one of: auth, authorization, bearer, cookie(s), cred(s), credential(s), dsn, jwt, oauth,
      passphrase, passwd, password(s), private, pwd, secret(s), signature;
    * contains one of: accesskey, apikey, connectionstr, connstr, credential, passwd, password,
      privatekey, secret, sessionid (glued names such as ``DBPASSWORD``, ``APIKEY``);
    * is ``key``, unless it is qualified as a data-structure key: preceded by sort, primary,
      foreign, partition, group, join, merge, index, lookup, dict, cache, hash, shard, composite,
      unique, row, column, label, metric, param, rng, prng, random, run, cell (``sort_key``,
      ``rng_key``, nbmlops' own ``run_key`` and ``cell_key`` identifiers) or followed by col(s),
      column(s), field(s), name(s), type, func, fn, point(s), frame(s), word(s) (``key_column``,
      ``key_points``);
    * is ``token`` or ends in ``token`` (``hftoken``), unless qualified as a tokenizer token or a
      count: preceded by (or glued to) pad, bos, eos, unk, sep, cls, mask, start, end, stop,
      special, max, min, n, num (``pad_token``) or followed by id(s), type(s), count(s), len,
      length, limit, size, dim, index, embedding(s) (``token_ids``);
    * is the plural ``keys`` or ``tokens`` after access, api, auth, client, encryption, master,
      refresh, session, signing or ssh (``api_keys``); other plurals are counts or collections
      (``max_tokens``, ``num_tokens``, ``dict_keys``) and are not secret;
    * is ``session`` followed by id, key or cookie (web session ids are bearer credentials);
    * is ``conn`` or ``connection`` followed by str or string.

    ``tokenizer``, ``keyword``, ``author`` and similar are different words and never match.
    """
    words = [word.lower() for word in _WORD.findall(name)]
    return any(_is_secret_word(words, index) for index in range(len(words)))


def _is_secret_word(words: list[str], index: int) -> bool:
    word = words[index]
    before = words[index - 1] if index else ""
    after = words[index + 1] if index + 1 < len(words) else ""
    if word in _SECRET_WORDS or any(fragment in word for fragment in _SECRET_FRAGMENTS):
        return True
    if word in ("keys", "tokens"):
        return before in _CREDENTIAL_OWNERS
    if word == "key":
        return before not in _KEY_NOT_SECRET_BEFORE and after not in _KEY_NOT_SECRET_AFTER
    if word.endswith("token"):
        qualifier = word[: -len("token")] or before
        return qualifier not in _TOKEN_NOT_SECRET_BEFORE and after not in _TOKEN_NOT_SECRET_AFTER
    if word == "session":
        return after in ("id", "key", "cookie")
    if word in ("conn", "connection"):
        return after in ("str", "string")
    return False


def redact_text(text: str) -> str:
    """``text`` with well-known token shapes and URI credentials replaced by :data:`REDACTED`."""
    text = _TOKEN_SHAPES.sub(REDACTED, text)
    return redact_uri(text)


def strip_userinfo(uri: str) -> str:
    """``uri`` without its ``user:password@`` part: a link that works once the browser asks for them."""
    return _USERINFO.sub("://", uri)


def redact_uri(text: str) -> str:
    """``text`` with the credentials of every URI in it replaced by :data:`REDACTED`.

    The whole user-info part goes (``scheme://user:pass@host`` -> ``scheme://***@host``; user
    names in URIs are often tokens themselves), and so does the value of every query parameter
    whose name :func:`is_secret_name` (``?token=abc&x=1`` -> ``?token=***&x=1``), wherever such
    ``?name=value`` / ``&name=value`` pairs occur in the text.
    """
    if "://" in text:
        text = _USERINFO.sub(f"://{REDACTED}@", text)
    if "=" in text:
        text = _QUERY_PARAM.sub(_redact_query_param, text)
    return text


def _redact_query_param(match: re.Match[str]) -> str:
    separator, name, _ = match.groups()
    return f"{separator}{name}={REDACTED}" if is_secret_name(unquote(name)) else match.group(0)


class Redactor:
    """Remembers secret values and scrubs them from any text. Safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._stale = False

    def add_value(self, value: object) -> None:
        """Remember ``value`` as a secret.

        Non-strings and strings shorter than :data:`MIN_SECRET_LENGTH` are ignored. The value's
        whitespace-stripped and URL-encoded forms are remembered too.
        """
        if not isinstance(value, str):
            return
        variants = {value, value.strip(), quote(value, safe="")}
        variants = {variant for variant in variants if len(variant) >= MIN_SECRET_LENGTH}
        with self._lock:
            if not variants <= self._values:
                self._values |= variants
                self._stale = True

    def learn_namespace(self, names_to_values: Mapping[str, object]) -> None:
        """Remember the string values whose names look secret (see :func:`is_secret_name`).

        Mappings are searched two levels deep (``config["db"]["password"]``), and every string
        inside a secret-named mapping, list or tuple counts as secret (``creds = {"user": ...}``).
        Containers of more than 256 items are skipped, so this stays cheap on a whole namespace.
        """
        for name, value in list(names_to_values.items()):
            self._learn_item(name, value, _MAX_DEPTH, inherited=False)

    def _learn_item(self, name: object, value: object, depth: int, inherited: bool) -> None:
        secret = inherited or (isinstance(name, str) and is_secret_name(name))
        if isinstance(value, str):
            if secret:
                self.add_value(value)
            return
        if depth <= 0:
            return
        try:
            if isinstance(value, Mapping) and len(value) <= _MAX_CONTAINER:
                items = list(value.items())
            elif secret and isinstance(value, (list, tuple)) and len(value) <= _MAX_CONTAINER:
                items = [(None, item) for item in value]
            else:
                return
        except Exception:  # a user's own Mapping may fail in any way; it just teaches nothing
            return
        for key, item in items:
            self._learn_item(key, item, depth - 1, secret)

    def learn_environment(self, environ: Mapping[str, str] = os.environ) -> None:
        """Remember the environment variables whose names look secret (``HF_TOKEN``, ...).

        ``PWD`` and ``OLDPWD`` are skipped: shells set them to directories, not passwords.
        """
        for name, value in list(environ.items()):
            if name not in _ENV_NOT_SECRET and is_secret_name(name):
                self.add_value(value)

    def learn_source(self, source: str) -> None:
        """Remember the string literals that ``source`` assigns to secret-looking targets.

        See :meth:`redact_source` for what counts as such a literal. Source that does not parse
        (IPython magics, shell escapes, typos) is handled line by line: lines that break parsing
        are skipped and the rest is still read.
        """
        tree = _parse_leniently(source)
        if tree is not None:
            for node in _secret_literals(tree):
                self.add_value(_literal_text(node))
        for value in _magic_option_secrets(source)[1]:
            self.add_value(value)

    def scrub(self, text: str) -> str:
        """``text`` with every remembered secret replaced by :data:`REDACTED`.

        Longer secrets are matched first; the result then goes through :func:`redact_text`.
        """
        pattern = self._current_pattern()
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
        return redact_text(text)

    def _current_pattern(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._stale:
                longest_first = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(map(re.escape, longest_first)))
                self._stale = False
            return self._pattern

    def redact_value(self, name: str, value: str) -> str:
        """:data:`REDACTED` when ``name`` looks secret, else ``value`` scrubbed."""
        return REDACTED if is_secret_name(name) else self.scrub(value)

    def redact_mapping(self, mapping: Mapping[str, str]) -> dict[str, str]:
        """A copy of ``mapping`` with :meth:`redact_value` applied to every item."""
        return {name: self.redact_value(name, value) for name, value in mapping.items()}

    def redact_source(self, source: str) -> str:
        """``source`` with secret literals replaced by ``'***'``, then scrubbed.

        A secret literal is a string (or bytes, or f-string) literal, alone or inside a tuple,
        list, set, dict, ``+`` concatenation, ``or``/``and`` or conditional expression, that is:

        * assigned to a secret-looking name, attribute or string subscript (``api_key = "..."``,
          ``cfg.password = "..."``, ``os.environ["HF_TOKEN"] = "..."``), also by ``:=``, ``+=`` or
          an annotated assignment;
        * passed as a secret-looking keyword argument (``connect(password="...")``) or as the
          second argument of a call whose first is a secret-looking string
          (``os.environ.setdefault("HF_TOKEN", "...")``);
        * the value of a secret-looking key in a dict display (``{"token": "..."}``);
        * the default of a secret-looking function parameter, or compared with a secret-looking
          name (``password == "..."``).

        * in a magic or shell line (``%%track --tag api_key=...``), the value of a ``name=value``
          option whose name looks secret.

        Arguments of a call on the value side are not looked into (``token = read("path")`` keeps
        ``"path"``; ``os.environ.get("TOKEN", "...")`` is caught by the second-argument rule).
        Everything else is kept byte for byte: literals are replaced at their exact source
        positions. The literals found are also remembered, so output echoing them is scrubbed.
        """
        text, secrets = _without_secret_literals(source)
        text, options = _magic_option_secrets(text)
        for secret in (*secrets, *options):
            self.add_value(secret)
        return self.scrub(text)


@functools.lru_cache(maxsize=4096)
def _without_secret_literals(source: str) -> tuple[str, tuple[str, ...]]:
    """``source`` with its secret literals replaced, and their values; cached, since kernel history
    is redacted again for every tracked cell and its entries never change."""
    tree = _parse_leniently(source)
    if tree is None:
        return source, ()
    line_starts, lines = _line_index(source)
    spans: list[tuple[int, int, str]] = []
    secrets: list[str] = []
    for node in _secret_literals(tree):
        value = _literal_text(node)
        if value is not None:
            secrets.append(value)
        start = _offset(line_starts, lines, node.lineno, node.col_offset)
        end_lineno, end_column = node.end_lineno or node.lineno, node.end_col_offset or 0
        end = _offset(line_starts, lines, end_lineno, end_column)
        if _STRING_LITERAL.match(source, start) and source[end - 1 : end] in ("'", '"'):
            replacement = "b'***'" if isinstance(_constant_value(node), bytes) else "'***'"
            spans.append((start, end, replacement))
    pieces: list[str] = []
    position = 0
    for start, end, replacement in sorted(spans):
        if start >= position:  # skips literals nested inside one already replaced
            pieces += [source[position:start], replacement]
            position = end
    pieces.append(source[position:])
    return "".join(pieces), tuple(secrets)


def _magic_option_secrets(source: str) -> tuple[str, tuple[str, ...]]:
    """``source`` with the values of secret-named ``name=value`` options in its ``%``/``!`` lines
    replaced, and those values."""
    if "%" not in source and "!" not in source:
        return source, ()
    found: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if not is_secret_name(match.group("name")):
            return match.group(0)
        value = match.group("value")
        found.append(value.strip("\"'"))
        return f"{match.group('name')}={REDACTED}"

    lines = source.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.lstrip().startswith(("%", "!")):
            lines[index] = _OPTION.sub(replace, line)
    return "".join(lines), tuple(found)


def _parse_leniently(source: str) -> ast.Module | None:
    """The syntax tree of ``source``, with lines that break parsing replaced by ``pass``.

    Lines are replaced in place (line numbers and the columns of every other line are kept):
    first IPython's ``%magic``, ``!shell`` and ``?help`` lines, then, one at a time, each line a
    ``SyntaxError`` points to. ``None`` when that does not succeed within a few attempts.
    """
    try:
        return _parse(source)
    except (SyntaxError, ValueError, RecursionError):
        pass
    lines = _NEWLINE.split(source)
    lines = [_blank(line) if line.lstrip().startswith(("%", "!", "?")) else line for line in lines]
    for _ in range(_MAX_REPAIRS):
        try:
            return _parse("\n".join(lines))
        except SyntaxError as error:
            lineno = error.lineno
            if not lineno or lineno > len(lines) or lines[lineno - 1] == _blank(lines[lineno - 1]):
                return None
            lines[lineno - 1] = _blank(lines[lineno - 1])
        except (ValueError, RecursionError):
            return None
    return None


def _parse(source: str) -> ast.Module:
    with warnings.catch_warnings():  # invalid escapes warn; the user sees that when the cell runs
        warnings.simplefilter("ignore")
        return ast.parse(source)


def _blank(line: str) -> str:
    return line[: len(line) - len(line.lstrip())] + "pass"


def _line_index(source: str) -> tuple[list[int], list[str]]:
    """The character offset where each line of ``source`` starts, and the lines themselves."""
    starts = [0] + [match.end() for match in _NEWLINE.finditer(source)]
    return starts, _NEWLINE.split(source)


def _offset(line_starts: list[int], lines: list[str], lineno: int, utf8_column: int) -> int:
    """The character offset in the source of an ast position (``col_offset`` counts UTF-8 bytes)."""
    line = lines[lineno - 1]
    column = utf8_column
    if not line.isascii():
        column = len(line.encode()[:utf8_column].decode(errors="ignore"))
    return line_starts[lineno - 1] + column


def _secret_literals(tree: ast.AST) -> Iterator[ast.expr]:
    """Every literal in ``tree`` that a secret-looking target receives (see ``redact_source``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                yield from _assigned_literals(target, node.value)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) and node.value:
            yield from _assigned_literals(node.target, node.value)
        elif isinstance(node, ast.keyword):
            if node.arg and is_secret_name(node.arg):
                yield from _literals(node.value)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if _is_secret_key(key):
                    yield from _literals(value)
        elif isinstance(node, ast.Call):
            if len(node.args) >= 2 and _is_secret_key(node.args[0]):
                yield from _literals(node.args[1])
        elif isinstance(node, ast.arguments):
            positional = node.posonlyargs + node.args
            pairs: list[tuple[ast.arg, ast.expr | None]] = [
                *zip(
                    positional[len(positional) - len(node.defaults) :], node.defaults, strict=True
                ),
                *zip(node.kwonlyargs, node.kw_defaults, strict=True),
            ]
            for arg, default in pairs:
                if default and is_secret_name(arg.arg):
                    yield from _literals(default)
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_is_secret_target(operand) for operand in operands):
                for operand in operands:
                    yield from _literals(operand)


def _assigned_literals(target: ast.expr | None, value: ast.expr) -> Iterator[ast.expr]:
    """The literals in ``value`` that land in a secret-looking part of ``target``."""
    if (
        isinstance(target, (ast.Tuple, ast.List))
        and isinstance(value, (ast.Tuple, ast.List))
        and len(target.elts) == len(value.elts)
    ):
        for sub_target, sub_value in zip(target.elts, value.elts, strict=True):
            yield from _assigned_literals(sub_target, sub_value)
        return
    if _is_secret_target(target):
        yield from _literals(value)


def _is_secret_target(node: ast.expr | None) -> bool:
    if isinstance(node, (ast.Tuple, ast.List)):
        return any(_is_secret_target(element) for element in node.elts)
    if isinstance(node, ast.Starred):
        return _is_secret_target(node.value)
    if isinstance(node, ast.Name):
        name = node.id
    elif isinstance(node, ast.Attribute):
        name = node.attr
    elif isinstance(node, ast.Subscript):
        return _is_secret_key(node.slice)
    else:
        return False
    return is_secret_name(name)


def _is_secret_key(node: ast.expr | None) -> bool:
    """Whether ``node`` is a string constant that names a secret (``d["token"]``)."""
    name = _constant_value(node)
    return isinstance(name, str) and is_secret_name(name)


def _literals(node: ast.expr) -> Iterator[ast.expr]:
    """The string, bytes and f-string literals that make up the value ``node``."""
    if isinstance(node, ast.JoinedStr) or isinstance(_constant_value(node), (str, bytes)):
        yield node
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        for element in node.elts:
            yield from _literals(element)
    elif isinstance(node, ast.Dict):
        for value in node.values:
            yield from _literals(value)
    elif isinstance(node, ast.BinOp):
        yield from _literals(node.left)
        yield from _literals(node.right)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            yield from _literals(value)
    elif isinstance(node, ast.IfExp):
        yield from _literals(node.body)
        yield from _literals(node.orelse)


def _constant_value(node: ast.AST | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _literal_text(node: ast.expr) -> str | None:
    """The value of a string or bytes literal; ``None`` for an f-string (its fixed parts are
    formatting such as ``"Bearer "``, not the secret)."""
    value = _constant_value(node)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else None
