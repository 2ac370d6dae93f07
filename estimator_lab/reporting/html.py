"""Self-contained HTML: the Markdown subset the reports use, tables, one page with inline CSS.

The converter knows headings, paragraphs, `**bold**`, `` `code` ``, fenced code blocks, `-`/`*`
and numbered lists, links and images; anything else is shown as escaped text. Images must be
given as data URIs (`images`), so a page never loads anything from outside itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import escape

import pandas as pd

from estimator_lab.reporting.markdown import format_number

_HEADING = re.compile(r"(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_LIST_ITEM = re.compile(r"([-*]|(\d+)[.)])\s+(.*)")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")

_STYLE = """
body { font-family: system-ui, sans-serif; line-height: 1.5; color: #222; margin: 0; }
main { max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
code, pre { font-family: ui-monospace, monospace; font-size: 0.9em; }
pre { background: #f5f5f5; padding: 0.75rem; overflow-x: auto; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9em; }
caption { caption-side: top; text-align: left; padding-bottom: 0.25rem; }
th, td { padding: 0.2rem 0.6rem; border-bottom: 1px solid #ddd; }
thead th { border-bottom: 2px solid #444; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.text { text-align: left; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; }
""".strip()


def inline_html(text: str, *, images: Mapping[str, str] | None = None) -> str:
    """Escaped HTML of one line of Markdown: code spans, images, links and bold.

    Example:
        >>> print(inline_html("**Table 1.** `a<b` & [more](x.html)"))
        <strong>Table 1.</strong> <code>a&lt;b</code> &amp; <a href="x.html">more</a>
    """
    images = images or {}
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unmatched backtick is literal
        parts = [text]
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{escape(part)}</code>")
            continue
        part = _IMAGE.sub(lambda m: _image(m.group(1), m.group(2), images), escape(part))
        part = _LINK.sub(r'<a href="\2">\1</a>', part)
        out.append(_BOLD.sub(r"<strong>\1</strong>", part))
    return "".join(out)


def _image(alt: str, source: str, images: Mapping[str, str]) -> str:
    # `alt` and `source` come escaped; `images` is keyed by the source as written.
    uris = {escape(name): uri for name, uri in images.items()}
    if source not in uris:
        raise ValueError(f"image {source!r} has no embedded data: the page must be self-contained")
    return f'<img src="{escape(uris[source])}" alt="{alt}">'


def markdown_to_html(text: str, *, images: Mapping[str, str] | None = None) -> str:
    """HTML for the Markdown subset the reports use.

    Args:
        text: Markdown: `#` headings, paragraphs, fenced code blocks, `-`/`*`/`1.` lists
            (one line per item; indented lines continue it), and inline `**bold**`,
            `` `code` ``, `[links](url)` and `![images](name)`.
        images: image name (as written in the Markdown) -> data URI.

    Returns:
        the HTML fragment, one block per line group.

    Raises:
        ValueError: an image that `images` does not hold.

    Example:
        >>> print(markdown_to_html("## Bias\\n\\n**Setup.** `st` vs [paper](p.pdf):\\n- a\\n- b"))
        <h2>Bias</h2>
        <p><strong>Setup.</strong> <code>st</code> vs <a href="p.pdf">paper</a>:</p>
        <ul>
        <li>a</li>
        <li>b</li>
        </ul>
    """
    images = images or {}
    blocks: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []
    list_tag = ""

    def flush() -> None:
        nonlocal list_tag
        if paragraph:
            blocks.append(f"<p>{inline_html(' '.join(paragraph), images=images)}</p>")
            paragraph.clear()
        if items:
            lis = "\n".join(f"<li>{inline_html(item, images=images)}</li>" for item in items)
            blocks.append(f"<{list_tag}>\n{lis}\n</{list_tag}>")
            items.clear()
            list_tag = ""

    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        i += 1
        if stripped.startswith("```"):
            flush()
            code = []
            while i < len(lines) and not lines[i].strip().startswith("```"):
                code.append(lines[i])
                i += 1
            i += 1  # the closing fence (or the end of the text)
            blocks.append(f"<pre><code>{escape(chr(10).join(code))}</code></pre>")
        elif not stripped:
            flush()
        elif heading := _HEADING.fullmatch(stripped):
            flush()
            level = len(heading.group(1))
            blocks.append(f"<h{level}>{inline_html(heading.group(2), images=images)}</h{level}>")
        elif (item := _LIST_ITEM.fullmatch(stripped)) and (
            not paragraph or item.group(2) in (None, "1")  # only `1.` interrupts a paragraph
        ):
            tag = "ul" if item.group(2) is None else "ol"
            if paragraph or (items and tag != list_tag):
                flush()
            list_tag = tag
            items.append(item.group(3))
        elif items and line[:1].isspace():
            items[-1] += " " + stripped
        else:
            if items:
                flush()
            paragraph.append(stripped)
    flush()
    return "\n".join(blocks)


def html_table(frame: pd.DataFrame, *, caption: str | None = None, digits: int = 3) -> str:
    """An HTML table of `frame` (index dropped), numbers as in `markdown_table`, right-aligned.

    Args:
        frame: the rows.
        caption: inline Markdown (bold, code) put in the `<caption>`.
        digits: significant figures of floating-point cells.

    Example:
        >>> print(html_table(pd.DataFrame({"name": ["a<b"], "value": [0.5]})))
        <table>
        <thead><tr><th class="text">name</th><th class="num">value</th></tr></thead>
        <tbody>
        <tr><td class="text">a&lt;b</td><td class="num">0.5</td></tr>
        </tbody>
        </table>
    """
    classes = [
        "num" if pd.api.types.is_numeric_dtype(frame[c]) else "text" for c in frame.columns
    ]
    head = "".join(
        f'<th class="{k}">{escape(str(c))}</th>'
        for k, c in zip(classes, frame.columns, strict=True)
    )
    rows = [
        "<tr>" + "".join(
            f'<td class="{k}">{escape(format_number(v, digits))}</td>'
            for k, v in zip(classes, row, strict=True)
        ) + "</tr>"
        for row in frame.astype(object).itertuples(index=False)
    ]
    lines = ["<table>"]
    if caption is not None:
        lines.append(f"<caption>{inline_html(caption)}</caption>")
    lines += [f"<thead><tr>{head}</tr></thead>", "<tbody>", *rows, "</tbody>", "</table>"]
    return "\n".join(lines)


def html_page(title: str, body: str) -> str:
    """A complete HTML5 page around `body` with its CSS inline (no links, no scripts)."""
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>\n{_STYLE}\n</style>",
        "</head>",
        "<body>",
        "<main>",
        body,
        "</main>",
        "</body>",
        "</html>",
        "",
    ])
