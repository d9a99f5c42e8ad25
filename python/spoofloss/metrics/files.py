"""Reading the ASVspoof 5 score and key files in bulk, with numpy.

Formats (evaluation-package/README.md): text tables, one trial per line, fields separated
by tabs, and a header line naming the columns::

    CM scores   filename  cm-score
    CM keys     filename  cm-label                       (bonafide / spoof)
    SASV scores spk  filename  cm-score  asv-score  sasv-score   ('-' where a system gives none)
    SASV keys   spk  filename  cm-label  asv-label       (target / nontarget / spoof)

Columns are found by their header names, in any order; the package's aliases are
accepted (``trial_anon``, ``tar_spk_anon``, ``cm_label``, ``asv_label``), and a key may
carry more columns: ``attack`` or ``attack_anon`` (per-attack tables) and ``codec``.
Any run of spaces and tabs separates fields; blank lines are skipped; CRLF line ends
are accepted.

Speed: no Python object per line.  The file is read as one byte buffer; fields are
located with vectorised searches for tabs and newlines (a general whitespace tokenizer
takes over when the file is not plainly tab-separated); each column is gathered into a
fixed-width byte-string array; scores are converted by numpy (correctly rounded, like
Python's ``float``; pandas' default parser may differ in the last bit for scores of more
than 17 digits); trials are matched to the key by sorting 64-bit hashes of their names,
every match checked byte for byte.
"""

from __future__ import annotations

import os
import sys
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch


class FileFormatError(Exception):
    """A problem in a score or key file: ``path, line N: what``."""

    def __init__(self, path: str, line: Optional[int], what: str):
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {what}")


# canonical column name -> accepted header names
ALIASES = {
    "filename": ("filename", "trial_anon"),
    "spk": ("spk", "tar_spk_anon"),
    "cm-score": ("cm-score", "cm_score"),
    "asv-score": ("asv-score", "asv_score"),
    "sasv-score": ("sasv-score", "sasv_score"),
    "cm-label": ("cm-label", "cm_label"),
    "asv-label": ("asv-label", "asv_label"),
    "attack": ("attack", "attack_anon", "attack_label"),
    "codec": ("codec",),
}
_CANONICAL = {alias: name for name, aliases in ALIASES.items() for alias in aliases}


class Progress:
    """Stage lines on stderr for large files (or always / never)."""

    def __init__(self, enabled: Optional[bool]):
        self.enabled = enabled  # None: decide per file by its size
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def active(self, size: int = 0) -> bool:
        return self.enabled if self.enabled is not None else size >= 32 << 20

    def say(self, message: str, size: int = 0, final: bool = True) -> None:
        if not self.active(size):
            return
        text = f"[spoofloss.metrics {time.perf_counter() - self.t0:6.1f} s] {message}"
        if self.tty and not final:
            sys.stderr.write("\r" + text)
        else:
            sys.stderr.write(("\r" if self.tty else "") + text + "\n")
        sys.stderr.flush()


_SPARE = 64  # NUL bytes kept after the data, so that a field gather never runs past it


def read_bytes(path: str, progress: Progress) -> np.ndarray:
    """The file's bytes as uint8, followed by _SPARE NUL bytes (not part of the result's
    length: ``result.base`` holds them)."""
    try:
        size = os.path.getsize(path)
        out = bytearray(size + _SPARE)
        view = memoryview(out)
        done = 0
        with open(path, "rb") as f:
            while done < size:
                got = f.readinto(view[done: min(size, done + (64 << 20))])
                if not got:
                    break
                done += got
                progress.say(f"reading {path}: {done >> 20} of {size >> 20} MiB", size, final=done >= size)
    except OSError as exc:
        raise FileFormatError(path, None, f"cannot read the file ({exc.strerror or exc})") from None
    return np.frombuffer(out, dtype=np.uint8)[:done]


class Table:
    """The fields of a text table: ``start``/``end`` byte offsets [n, C] of every field
    of the n data lines, and their line numbers (1-based): an array, or the number of the
    first when they follow each other."""

    def __init__(self, path: str, buf: np.ndarray, columns: List[str], start, end, lines):
        self.path, self.buf, self.columns = path, buf, columns
        self.start, self.end, self.lines = start, end, lines

    def __len__(self):
        return self.start.shape[0]

    def has(self, name: str) -> bool:
        return name in self.columns

    def text(self, name: str, width: Optional[int] = None) -> np.ndarray:
        """The column as a fixed-width byte-string array (numpy ``S<width>``)."""
        c = self.columns.index(name)
        return gather_fields(self.buf, self.start[:, c], self.end[:, c], width)

    def line(self, row: int) -> int:
        return int(self.lines[row]) if isinstance(self.lines, np.ndarray) else self.lines + row


def gather_fields(buf: np.ndarray, start: np.ndarray, end: np.ndarray, width: Optional[int] = None) -> np.ndarray:
    n = start.shape[0]
    length = end - start
    w = int(length.max()) if n else 1
    w = max(w if width is None else max(width, w), 1)
    base = buf.base if isinstance(buf.base, np.ndarray) and buf.base.size >= buf.size + w else None
    padded = np.frombuffer(base, dtype=np.uint8) if base is not None else np.concatenate([buf, np.zeros(w, np.uint8)])
    # rows of a sliding-window view: one copy of w bytes per field, no index per byte
    out = np.lib.stride_tricks.sliding_window_view(padded, w)[start]
    short = length < w
    if short.any():  # bytes past a field's end become NUL (numpy's padding of S<w>)
        rows = np.flatnonzero(short)
        out[rows] *= np.arange(w) < length[rows, None]
    return out.view(f"S{w}").reshape(n)


def _split_lines(buf: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    newlines = np.flatnonzero(buf == 10)
    ends = newlines if (buf.size and buf[-1] == 10) else np.append(newlines, buf.size)
    starts = np.concatenate([[0], newlines + 1])[: ends.size]
    return starts, ends


def _tab_fields(buf, starts, ends, n_columns):
    """Fast path: every line holds exactly n_columns - 1 single tabs and no blank field.
    Returns (start, end) [lines, C] or None when the file is not that plain."""
    # strip one '\r' before each '\n'
    cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13)
    ends = ends - cr
    tabs = np.flatnonzero(buf == 9)
    tabs = tabs[np.searchsorted(tabs, starts[0]):]  # the body's tabs (not the header's)
    k = n_columns - 1
    if tabs.size != k * starts.size:
        return None
    if k == 0:
        field_start, field_end = starts[:, None], ends[:, None]
    else:
        tabs = tabs.reshape(-1, k)
        if not (np.all(tabs[:, 0] >= starts) and np.all(tabs[:, -1] < ends)):
            return None
        field_start = np.concatenate([starts[:, None], tabs + 1], axis=1)
        field_end = np.concatenate([tabs, ends[:, None]], axis=1)
    if np.any(field_end <= field_start):
        return None
    # a space inside a field is a separator in the general reading
    if np.count_nonzero(buf == 32):
        return None
    return field_start, field_end


def _whitespace_fields(path, buf, starts, ends):
    """General path: any run of spaces, tabs or CR separates fields.
    Returns (field starts, field ends, fields per line)."""
    sep = buf <= 32
    change = np.flatnonzero(sep[1:] != sep[:-1]) + 1
    begins = change[~sep[change]]
    stops = change[sep[change]]
    if buf.size and not sep[0]:
        begins = np.concatenate([[0], begins])
    if buf.size and not sep[-1]:
        stops = np.concatenate([stops, [buf.size]])
    first_field = np.searchsorted(begins, starts)
    count = np.searchsorted(begins, ends) - first_field
    return begins, stops, first_field, count


def read_table(path: str, kind: str, required: Sequence[str], progress: Progress) -> Table:
    """Read ``path``; ``required`` canonical columns must be in its header."""
    buf = read_bytes(path, progress)
    starts, ends = _split_lines(buf)
    # the header: the first line that is not blank
    header_row = 0
    while header_row < starts.size and not bytes(buf[starts[header_row]:ends[header_row]]).strip():
        header_row += 1
    if header_row == starts.size:
        raise FileFormatError(path, None, f"the file is empty; a {kind} file starts with a header line "
                              f"naming its columns ({', '.join(required)})")
    header_text = bytes(buf[starts[header_row]:ends[header_row]]).decode("utf-8", "replace")
    names = header_text.split()
    canonical = [_CANONICAL.get(x, x) for x in names]
    missing = [c for c in required if c not in canonical]
    if missing:
        if not any(x in _CANONICAL for x in names):
            what = (f"missing header: the first line ({header_text.strip()[:60]!r}) names no column; a {kind} "
                    f"file starts with a header line naming its columns, tab-separated: {chr(9).join(required)}")
        else:
            what = (f"the header names no {' / '.join(repr(m) for m in missing)} column (found: "
                    f"{', '.join(names)}); a {kind} file needs the columns {', '.join(required)}")
        raise FileFormatError(path, header_row + 1, what)
    seen = set()
    for name in canonical:
        if name in seen:
            raise FileFormatError(path, header_row + 1, f"the header names the column {name!r} twice")
        seen.add(name)
    n_col = len(names)
    body_starts, body_ends = starts[header_row + 1:], ends[header_row + 1:]
    fields = _tab_fields(buf, body_starts, body_ends, n_col) if body_starts.size else (
        np.zeros((0, n_col), np.int64), np.zeros((0, n_col), np.int64))
    line_numbers = header_row + 2
    if fields is None:
        line_numbers = np.arange(header_row + 2, starts.size + 1, dtype=np.int64)
        begins, stops, first, count = _whitespace_fields(path, buf, body_starts, body_ends)
        nonblank = count > 0
        wrong = np.flatnonzero(nonblank & (count != n_col))
        if wrong.size:
            row = int(wrong[0])
            text = bytes(buf[body_starts[row]:body_ends[row]]).decode("utf-8", "replace").strip()
            raise FileFormatError(
                path, int(line_numbers[row]),
                f"{int(count[row])} field(s) where the header names {n_col} ({' '.join(names)}): {text[:80]!r}")
        first, line_numbers = first[nonblank], line_numbers[nonblank]
        index = first[:, None] + np.arange(n_col)
        fields = (begins[index], stops[index])
    progress.say(f"parsed {path}: {fields[0].shape[0]:,} lines", buf.size)
    return Table(path, buf, canonical, fields[0], fields[1], line_numbers)


# ---------------------------------------------------------------------------------------
# columns
# ---------------------------------------------------------------------------------------
def parse_scores(table: Table, column: str, allow_absent: bool = False) -> Optional[np.ndarray]:
    """float64 scores of a column; None when ``allow_absent`` and every field is '-'."""
    text = table.text(column)
    if allow_absent:
        dash = text == b"-"
        n_dash = int(np.count_nonzero(dash))
        if n_dash == len(text) and n_dash:
            return None
        if n_dash:
            row = int(np.flatnonzero(dash)[0])
            raise FileFormatError(table.path, table.line(row),
                                  f"{column} is '-' here but a number on other lines; give it on every line or on none")
    try:
        values = text.astype(np.float64)
    except ValueError:
        values = None
    if values is None:
        for row, field in enumerate(text.tolist()):  # error path only: find the first bad field
            try:
                float(field)
            except ValueError:
                raise FileFormatError(table.path, table.line(row),
                                      f"{column} {field.decode('utf-8', 'replace')!r} is not a number") from None
        raise FileFormatError(table.path, None, f"{column}: a field is not a number")
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise FileFormatError(table.path, table.line(row),
                              f"{column} {text[row].decode('utf-8', 'replace')!r} is not a finite number")
    return values


def parse_labels(table: Table, column: str, allowed: Sequence[str]) -> np.ndarray:
    """Index into ``allowed`` of each field (int64)."""
    width = max(len(v) for v in allowed)
    text = table.text(column, width)
    words = _words(text)
    codes = np.full(len(text), -1, dtype=np.int64)
    for code, value in enumerate(allowed):
        want = _words(np.array([value.encode()], dtype=text.dtype))[0]
        codes[(words == want).all(axis=1)] = code
    bad = np.flatnonzero(codes < 0)
    if bad.size:
        row = int(bad[0])
        raise FileFormatError(table.path, table.line(row),
                              f"unknown {column} {text[row].decode('utf-8', 'replace')!r}; expected one of "
                              f"{', '.join(allowed)}")
    return codes


def _words(text: np.ndarray) -> np.ndarray:
    """uint64 [n, ceil(width / 8)]: the bytes of each fixed-width string, NUL-padded."""
    n, w = text.shape[0], text.dtype.itemsize
    words = (w + 7) // 8
    if w == words * 8:
        return text.view(np.uint64).reshape(n, words)
    raw = np.zeros((n, words * 8), dtype=np.uint8)
    raw[:, :w] = text.view(np.uint8).reshape(n, w)
    return raw.view(np.uint64)


def categories(text: np.ndarray) -> Tuple[np.ndarray, List[str]]:
    """Dense ids of the values of a byte-string column, numbered in sorted order of the
    values, and the values."""
    values, ids = _unique(text)
    order = sorted(range(len(values)), key=lambda i: values[i])
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values))
    return rank[ids], [values[i] for i in order]


def _unique(text: np.ndarray) -> Tuple[List[str], np.ndarray]:
    # values of at most 8 bytes (attack and codec names) are their own NUL-padded word:
    # no hash, no collision; longer ones are hashed and checked
    exact = text.dtype.itemsize <= 8
    h = torch.from_numpy((_words(text)[:, 0] if exact else _hash(text)).view(np.int64))
    uniq, inverse = torch.unique(h, return_inverse=True)
    first = torch.full((uniq.numel(),), len(text), dtype=torch.int64).scatter_reduce_(
        0, inverse, torch.arange(len(text)), "amin").numpy()
    inverse = inverse.numpy()
    if not exact and not np.array_equal(text, text[first][inverse]):  # a hash collision: exact (slower) way
        uniq_text, inverse = np.unique(text, return_inverse=True)
        return [v.decode("utf-8", "replace") for v in uniq_text.tolist()], inverse.reshape(-1)
    return [v.decode("utf-8", "replace") for v in text[first].tolist()], inverse


def _hash(text: np.ndarray) -> np.ndarray:
    """64-bit hash of each fixed-width byte string (multiply-xorshift over 8-byte words)."""
    raw = _words(text)
    h = np.full(raw.shape[0], 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(raw.shape[1]):
            h ^= raw[:, k]
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(31)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(29)
    return h


def join_columns(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Fixed-width byte strings of several columns joined by a tab (a composite trial id)."""
    widths = [p.dtype.itemsize for p in parts]
    n = parts[0].shape[0]
    out = np.zeros((n, sum(widths) + len(parts) - 1), dtype=np.uint8)
    at = 0
    for p, w in zip(parts, widths):
        out[:, at:at + w] = p.view(np.uint8).reshape(n, w)
        at += w
        if at < out.shape[1]:
            out[:, at] = 9
            at += 1
    return out.view(f"S{out.shape[1]}").reshape(n)


def match(score_ids: np.ndarray, scores: Table, key_ids: np.ndarray, key: Table, what: str) -> np.ndarray:
    """For each score row, its key row (int64).  Errors name duplicates, scored trials the
    key lacks, and key trials without a score (the package requires the same trials)."""
    width = max(score_ids.dtype.itemsize, key_ids.dtype.itemsize)
    score_ids = score_ids.astype(f"S{width}", copy=False)
    key_ids = key_ids.astype(f"S{width}", copy=False)
    hk = torch.from_numpy(_hash(key_ids).view(np.int64))
    sorted_hk, order = torch.sort(hk)
    # duplicates in the key: equal neighbours among the sorted hashes, checked byte for byte
    same = torch.nonzero(sorted_hk[1:] == sorted_hk[:-1]).reshape(-1)
    if same.numel():
        pairs = [tuple(sorted((int(order[k]), int(order[k + 1])))) for k in same.tolist()]
        pairs = [p for p in pairs if key_ids[p[0]] == key_ids[p[1]]]
        if pairs:
            first, again = min(pairs, key=lambda p: p[1])
            raise FileFormatError(key.path, key.line(again),
                                  f"{what} {key_ids[again].decode('utf-8', 'replace')!r} appears again "
                                  f"(first on line {key.line(first)})")
    if len(score_ids) == len(key_ids) and np.array_equal(score_ids, key_ids):
        return np.arange(len(key_ids))  # same trials in the same order
    hs = torch.from_numpy(_hash(score_ids).view(np.int64))
    # searching sorted needles walks the key's hashes in order (cache-friendly): several
    # times faster than searching them in file order
    sorted_hs, by_hash = torch.sort(hs)
    pos = torch.empty_like(by_hash)
    pos[by_hash] = torch.searchsorted(sorted_hk, sorted_hs).clamp_(max=len(key_ids) - 1)
    rows = order[pos].numpy()
    found = (sorted_hk[pos] == hs).numpy() & (key_ids[rows] == score_ids)  # byte for byte
    if not found.all():
        # a name missing from the key, or (rarely) two names with one hash: match exactly
        key_order = np.argsort(key_ids, kind="stable")
        at = np.minimum(np.searchsorted(key_ids[key_order], score_ids), len(key_ids) - 1)
        rows = key_order[at]
        found = key_ids[rows] == score_ids
    if not found.all():
        row = int(np.flatnonzero(~found)[0])
        raise FileFormatError(scores.path, scores.line(row),
                              f"{what} {score_ids[row].decode('utf-8', 'replace')!r} is not in the key file "
                              f"{key.path}")
    # duplicates in the scores: two rows on one key row
    uses = np.bincount(rows, minlength=len(key_ids))
    if (uses > 1).any():
        twice = np.flatnonzero(uses[rows] > 1)
        first = int(twice[0])
        again = int(twice[1:][rows[twice[1:]] == rows[first]][0])
        raise FileFormatError(scores.path, scores.line(again),
                              f"{what} {score_ids[again].decode('utf-8', 'replace')!r} appears again "
                              f"(first on line {scores.line(first)})")
    if len(key_ids) > len(score_ids):
        row = int(np.flatnonzero(uses == 0)[0])
        raise FileFormatError(key.path, key.line(row),
                              f"{what} {key_ids[row].decode('utf-8', 'replace')!r} has no score in {scores.path} "
                              f"({len(key_ids) - len(score_ids):,} key trial(s) unscored; the score file must "
                              "hold every trial of the key)")
    return rows
