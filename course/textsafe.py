"""Student text is untrusted: made harmless where it enters the trusted side, escaped where written.

Two layers:

* :func:`clean` at the boundary (a worker's reply, a test's failure message, a file name from an
  upload): always a ``str`` of valid UTF-8 (lone surrogates become U+FFFD), with C0/C1 control
  characters (except newline and tab), DEL and the Unicode direction overrides shown as visible
  ``\\x..`` / ``\\u....`` escapes, capped in length. Such text goes into SQLite, JSON and files.
* per-format escapers where text is written: :func:`md_code_span` (an inline code span no run of
  backticks can close), :func:`md_code_block` (a fence likewise), :func:`xml_text` (XML 1.0's
  allowed characters only), :func:`html_text`, :func:`term` (rich markup escaped), :func:`csv_cell`
  (no spreadsheet formula), :func:`one_line`.
"""

from __future__ import annotations

import html
import re
from typing import Any

# C0 controls but \t and \n, DEL, C1 controls, and the bidirectional overrides/isolates that can make
# text display differently from what it is ("Trojan source").
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ufeff]")
_XML_BAD = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _escape_char(m: re.Match) -> str:
    c = m.group(0)
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def clean(value: Any, limit: int = 20000) -> str:
    """A safe, capped ``str`` of any value (see the module docstring)."""
    if not isinstance(value, str):
        try:
            value = str(value)
        except Exception:
            value = "<unprintable>"
    text = str.__str__(value) if type(value) is not str else value
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _UNSAFE.sub(_escape_char, text)
    if len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


def one_line(value: Any, limit: int = 500) -> str:
    return clean(value, limit).replace("\n", " ").replace("\t", " ")


def md_code_span(value: Any, limit: int = 500) -> str:
    """Inline Markdown code whose delimiters no backtick run inside can match."""
    text = one_line(value, limit)
    run = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (run + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text or ' '}{pad}{fence}"


def md_code_block(value: Any, max_lines: int, indent: str = "") -> list[str]:
    """Lines of a fenced Markdown code block that nothing in ``value`` can close."""
    text = clean(value)
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    body = text.split("\n")[:max_lines]
    return [f"{indent}{fence}text", *(indent + line for line in body), f"{indent}{fence}"]


def xml_text(value: Any, limit: int = 20000) -> str:
    """Text safe for an XML 1.0 document (attributes and elements; ElementTree escapes the rest)."""
    return _XML_BAD.sub("\ufffd", clean(value, limit))


def html_text(value: Any, limit: int = 20000) -> str:
    return html.escape(clean(value, limit), quote=True)


def term(value: Any, limit: int = 2000) -> str:
    """For a rich console: no markup, no escape sequences (ESC is shown as \\x1b)."""
    from rich.markup import escape
    # rich.markup.escape covers tag-like brackets; rich also drops the backslash of a plain "\\[",
    # so a backslash before any other bracket is doubled to show as written.
    # Trailing backslashes are doubled too, so that markup the caller appends stays markup.
    text = clean(value, limit)
    body = text.rstrip("\\")
    tail = "\\" * (2 * (len(text) - len(body)))
    return re.sub(r"\\\[(?![a-z#/@])", r"\\\\[", escape(body)) + tail


_FORMULA = ("=", "+", "-", "@", "\t", "\r", "|")


def csv_cell(value: Any, limit: int = 20000) -> str:
    """A spreadsheet cell that is never evaluated as a formula (OWASP's CSV injection advice)."""
    text = one_line(value, limit)
    if text.startswith(_FORMULA) and not _is_number(text):
        return "'" + text
    return text


_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _is_number(text: str) -> bool:
    """A plain decimal number (``-3.5``, ``1e-3``); not ``-inf``, ``-INFINITY`` or ``-nan``, which a
    spreadsheet reads as a name inside a formula."""
    return _DECIMAL.fullmatch(text) is not None
