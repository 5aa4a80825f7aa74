"""Clean a raw completion and find its code fences: steps 1 and 2 of the extraction.

:func:`normalise` fixes line endings, drops invisible characters, the prompt echoed
before the assistant turn, everything after an end-of-text marker, other special tokens
and a leading ``Assistant:`` role prefix, and expands tabs in indentation. It keeps the
line count, so messages still point at the completion's lines. :func:`find_fences` finds
the Markdown code blocks: which lines are Python (or untagged) code, which are fence lines
or another language's content. Pure string work.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

# --------------------------------------------------------------------------- normalise

# Markers after which a model's answer is over; text after them is another document or
# a hallucinated next turn.
_STOP_RE = re.compile(
    r"<\|endoftext\|>|<\|im_end\|>|<\|eot_id\|>|<\|end_of_text\|>|<\|end\|>|<\|EOT\|>"
    r"|</s>|<end_of_turn>|<eos>|<\|file_separator\|>|<｜end▁of▁sentence｜>"
)
# Where an assistant turn starts; anything before it is an echo of the prompt.
_ASSISTANT_RE = re.compile(
    r"<\|im_start\|>[ \t]*assistant\b|<\|start_header_id\|>[ \t]*assistant[ \t]*<\|end_header_id\|>"
    r"|<\|assistant\|>|<start_of_turn>[ \t]*model\b|\[/INST\]"
)
# Other special tokens, removed in place. None of the patterns spans a newline, so line
# numbers in messages still match the completion.
_SPECIAL_RE = re.compile(
    r"<\|im_start\|>[ \t]*(?:system|user|assistant)?|<start_of_turn>[ \t]*(?:user|model)?"
    r"|<\|start_header_id\|>[^<>\n]{0,20}<\|end_header_id\|>|<\|[\w.:-]{1,40}\|>"
    r"|<｜[^｜\n]{1,40}｜>|<s>|<pad>|<unk>|\[/?INST\]|<</?SYS>>"
)
_ROLE_PREFIX_RE = re.compile(
    r"^[ \t]*(?:#{1,4}[ \t]*)?(?:assistant|response|answer|bot|gpt)[ \t]*:", re.I
)
_INVISIBLE_RE = re.compile("[\x00\ufeff\u200b\u200c\u200d]")
_LEADING_WS_RE = re.compile(r"^[ \t\u00a0]+", re.M)


def normalise(text: str) -> tuple[str, list[str]]:
    """Clean line endings, special tokens and indentation; keep the line count."""
    notes: list[str] = []
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        notes.append("normalised line endings")
    text = _INVISIBLE_RE.sub("", text)

    header = _ASSISTANT_RE.search(text)
    if header is not None:
        # Blank the prompt echo out but keep its newlines so line numbers stay true.
        text = "\n" * text.count("\n", 0, header.end()) + text[header.end() :]
        notes.append("dropped text before the assistant turn")
    text, marker = _cut_at_stop_marker(text)
    if marker is not None:
        notes.append(f"cut at {marker}")
    cleaned = _SPECIAL_RE.sub("", text)
    if cleaned != text:
        notes.append("removed special tokens")
    text = _strip_role_prefix(cleaned, notes)

    # Tabs and no-break spaces in indentation become spaces: a tab is one level (4), which
    # is what models mean when they mix tabs with 4-space indentation.
    expanded = _LEADING_WS_RE.sub(lambda m: m.group().replace("\u00a0", " ").expandtabs(4), text)
    if expanded != text:
        notes.append("expanded tabs in indentation")
    return expanded, notes


def _cut_at_stop_marker(text: str) -> tuple[str, str | None]:
    """Cut at the first end-of-text marker that follows some content.

    A marker before any content (a model that opens with ``<|endoftext|>``) is skipped,
    with the text before it blanked to newlines.
    """
    start = 0
    for match in _STOP_RE.finditer(text):
        if _SPECIAL_RE.sub("", text[start : match.start()]).strip():
            return "\n" * text.count("\n", 0, start) + text[start : match.start()], match.group()
        start = match.end()
    return "\n" * text.count("\n", 0, start) + text[start:], None


def _strip_role_prefix(text: str, notes: list[str]) -> str:
    """Remove a leading ``Assistant:`` style prefix from the first non-blank line."""
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if line.strip():
            stripped = _ROLE_PREFIX_RE.sub("", line, count=1)
            if stripped != line:
                lines[index] = stripped.lstrip(" \t")
                notes.append("removed role prefix")
            break
    return "\n".join(lines)


# ------------------------------------------------------------------------------ fences

_FENCE_RE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^`\n]*?)[ \t]*$")
_INFO_WORD_RE = re.compile(r"[\w+#.-]*")
_PYTHON_TAG_RE = re.compile(r"(?:(?:i?python|py)[\d.]*|pytorch|torch)?", re.I)


@dataclass
class Fences:
    """Markdown code blocks: which lines are Python code and which are fence furniture."""

    python_lines: set[int] = field(default_factory=set)  # content of python/untagged blocks
    skipped: set[int] = field(default_factory=set)  # fence lines and other-language content
    blocks: int = 0
    other_blocks: int = 0
    unclosed: bool = False


def _is_python_tag(info: str) -> bool:
    """Whether a fence info string (``python``, ``py``, ``""``, ``bash``...) means Python."""
    word = _INFO_WORD_RE.match(info)
    return _PYTHON_TAG_RE.fullmatch(word.group() if word else "") is not None


def find_fences(lines: Sequence[str]) -> Fences:
    """Find fenced blocks; an unclosed final fence runs to the end (a truncated answer)."""
    fences = Fences()
    opened: tuple[int, str, bool] | None = None  # (line, fence characters, is python)

    def close(end: int) -> None:
        assert opened is not None
        start, _, python = opened
        content = set(range(start + 1, end))
        if python:
            fences.python_lines |= content
            fences.blocks += 1
        else:
            fences.skipped |= content
            fences.other_blocks += 1

    for index, line in enumerate(lines):
        match = _FENCE_RE.match(line)
        if match is None:
            continue
        ticks, info = match.groups()
        fences.skipped.add(index)
        if opened is None:
            opened = (index, ticks, _is_python_tag(info))
            continue
        if ticks[0] != opened[1][0] or len(ticks) < len(opened[1]):
            fences.skipped.discard(index)  # a shorter fence inside a block is content
            continue
        close(index)
        # "```python" inside an open block is never Python: read it as close-and-reopen,
        # the way models forget to close one block before starting the next.
        opened = (index, ticks, _is_python_tag(info)) if info else None
    if opened is not None:
        close(len(lines))
        fences.unclosed = True
    return fences
