"""The Markdown subset converter, HTML tables and the self-contained page."""

import pandas as pd
import pytest

from estimator_lab.reporting import format_number, html_page, html_table, markdown_to_html


def test_headings_paragraphs_bold_and_code():
    text = "# Title\n\n## Bias of `st` #\n\n**Setup.** 2 < 3 & `a<b **c**`\nwrapped line.\n"
    assert markdown_to_html(text).splitlines() == [
        "<h1>Title</h1>",
        "<h2>Bias of <code>st</code></h2>",
        "<p><strong>Setup.</strong> 2 &lt; 3 &amp; <code>a&lt;b **c**</code> wrapped line.</p>",
    ]


@pytest.mark.parametrize(
    ("line", "html"),
    [("### Closed ###", "<h3>Closed</h3>"), ("# C#", "<h1>C#</h1>"), ("#tag", "<p>#tag</p>"),
     ("####### seven", "<p>####### seven</p>")],
)
def test_heading_forms(line, html):
    assert markdown_to_html(line) == html


def test_code_blocks_are_escaped_and_not_converted():
    text = "Run:\n```\nestimator-lab bias --graph 'toy:n=4' \\\n    **x** <y>\n```\nafter"
    assert markdown_to_html(text).splitlines() == [
        "<p>Run:</p>",
        "<pre><code>estimator-lab bias --graph &#x27;toy:n=4&#x27; \\",
        "    **x** &lt;y&gt;</code></pre>",
        "<p>after</p>",
    ]


def test_lists_continuations_and_paragraph_interruptions():
    text = "Items:\n- one\n  continued\n* two\n\n1. first\n2. second\n\nWrapped at\n5. not a list"
    assert markdown_to_html(text).splitlines() == [
        "<p>Items:</p>",
        "<ul>", "<li>one continued</li>", "<li>two</li>", "</ul>",
        "<ol>", "<li>first</li>", "<li>second</li>", "</ol>",
        "<p>Wrapped at 5. not a list</p>",
    ]


def test_links_and_embedded_images():
    uri = "data:image/png;base64,AAAA"
    html = markdown_to_html("See [the paper](a.pdf?x=1&y=2).\n\n![bias](bias.png)",
                            images={"bias.png": uri})
    assert html.splitlines() == [
        '<p>See <a href="a.pdf?x=1&amp;y=2">the paper</a>.</p>',
        f'<p><img src="{uri}" alt="bias"></p>',
    ]


@pytest.mark.parametrize("source", ["other.png", "http://example.com/x.png"])
def test_an_image_without_embedded_data_is_refused(source):
    with pytest.raises(ValueError, match="has no embedded data: the page must be self-contained"):
        markdown_to_html(f"![x]({source})", images={"bias.png": "data:image/png;base64,"})


def test_table_cells_numbers_and_alignment():
    frame = pd.DataFrame({"name": ["<b>", "x&y"], "value": [1.5e-7, float("nan")],
                          "draws": [2000, 3]})
    lines = html_table(frame, caption="**Table 1.** `st`", digits=2).splitlines()
    assert lines[:3] == [
        "<table>",
        "<caption><strong>Table 1.</strong> <code>st</code></caption>",
        '<thead><tr><th class="text">name</th><th class="num">value</th>'
        '<th class="num">draws</th></tr></thead>',
    ]
    assert lines[4] == (
        f'<tr><td class="text">&lt;b&gt;</td><td class="num">{format_number(1.5e-7, 2)}</td>'
        '<td class="num">2,000</td></tr>'
    )
    assert lines[5] == '<tr><td class="text">x&amp;y</td><td class="num">–</td>' \
        '<td class="num">3</td></tr>'


def test_page_is_self_contained():
    page = html_page("Bias <of> `st`", "<p>body</p>")
    assert page.startswith("<!DOCTYPE html>\n") and "<title>Bias &lt;of&gt; `st`</title>" in page
    assert "<style>" in page and "<p>body</p>" in page
    for external in ("<link", "<script", "http:", "https:", "@import", "url("):
        assert external not in page
