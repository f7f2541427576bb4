"""CSV and text reading that reports bad rows instead of failing: `decode_text`, `undecodable`,
`read_csv_table`. Shared by the user code files (`medtok.codes.sources.user_files`) and the
multiple-choice CSVs (`qa.datasets`), so both report bad rows the same way."""

from __future__ import annotations

import codecs
import csv
import re

# a quoted field may span lines (descriptions with line breaks); a row running over this many
# lines is an unterminated quote: it is reported and reading restarts on the line after it
MAX_ROW_LINES = 1000
_LINE_END = re.compile(r"(?<=\n)|(?<=\r)(?!\n)")  # split after \n, \r\n or a lone \r
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_UNDECODABLE = "medtok.undecodable"
# surrogateescape only exists for byte codecs; this marks any undecodable input with a lone surrogate
codecs.register_error(_UNDECODABLE, lambda e: ("\udcfd", e.end))


def decode_text(data: bytes) -> str:
    """Bytes of a text file -> str. UTF-8 (a BOM is dropped) or UTF-16 with a BOM (Excel's
    "Unicode text"). Bytes that are not UTF-8 are kept as lone surrogates (`surrogateescape`)
    so that only the records holding them are rejected (`undecodable`), not the whole file."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors=_UNDECODABLE)
    return data.decode("utf-8-sig", errors="surrogateescape")


def undecodable(text: str) -> bool:
    """Whether `text` holds bytes that were not valid UTF-8 (or a lone surrogate escape)."""
    return bool(_SURROGATE.search(text))


class _RowTooLong(Exception):
    pass


class _Lines:
    """Feeds csv.reader one physical line at a time and remembers where the current row began.

    csv.reader pulls a line only when it needs one and yields a row as soon as a line ends it,
    so after each yield `next_index` is the first line of the next row."""

    def __init__(self, lines: list[str], start: int, max_row_lines: int):
        self.lines, self.next_index, self.row_start, self.max_row_lines = lines, start, start, max_row_lines

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.next_index >= len(self.lines):
            raise StopIteration
        if self.next_index - self.row_start >= self.max_row_lines:
            raise _RowTooLong
        self.next_index += 1
        return self.lines[self.next_index - 1]


def read_csv_table(text: str, *, delimiter: str = ",", max_row_lines: int = MAX_ROW_LINES
                   ) -> tuple[list[str] | None, list[tuple[int, list[str]]], list[tuple[int, str]]]:
    """(header, rows, bad) of CSV text. `rows` are (line, fields) with fields padded to the header
    width; `bad` are (line, reason) of rows that could not be read: an unterminated or stray quote,
    a row over `max_row_lines` lines, a field over the csv field limit, more fields than the header
    (extra fields that are all empty, as trailing commas leave, are dropped instead). After a bad
    row, reading restarts on the line after the row's first line, so one broken quote costs one
    row, not the rest of the file. Blank rows are ignored; header None means no header was read."""
    lines = [ln for ln in _LINE_END.split(text) if ln]
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    bad: list[tuple[int, str]] = []
    pos = 0
    while pos < len(lines):
        feed = _Lines(lines, pos, max_row_lines)
        reader = csv.reader(feed, delimiter=delimiter, strict=True)
        restart = None
        try:
            for fields in reader:
                start, n_lines = feed.row_start, feed.next_index - feed.row_start
                feed.row_start = feed.next_index
                if not any(f.strip() for f in fields):
                    continue
                if header is None:
                    header = [f.strip() for f in fields]
                    continue
                if len(fields) > len(header):
                    if any(f.strip() for f in fields[len(header):]):
                        bad.append((start + 1, f"{len(fields)} fields, the header has {len(header)}"))
                        if n_lines > 1:  # a stray quote may have swallowed the next lines: reread them
                            restart = start + 1
                            break
                        continue
                    fields = fields[: len(header)]
                rows.append((start + 1, fields + [""] * (len(header) - len(fields))))
        except _RowTooLong:
            bad.append((feed.row_start + 1, f"unterminated quote: the row runs over {max_row_lines} lines"))
            restart = feed.row_start + 1
        except csv.Error as e:
            msg = str(e)
            if "unexpected end of data" in msg:
                msg = "unterminated quote (the quoted field runs to the end of the file)"
            elif "expected after" in msg:  # a quote closed somewhere a field cannot end
                msg = f"unterminated or stray quote ({msg})"
            bad.append((feed.row_start + 1, msg))
            restart = feed.row_start + 1
        if header is None and bad:  # the header itself is unreadable: nothing to align rows to
            return None, [], bad
        if restart is None:
            break
        pos = restart
    return header, rows, bad
