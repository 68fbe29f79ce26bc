"""The popover data is JSON inside a script element: nothing a contributor writes can end it."""

from __future__ import annotations

import json
import re


def test_a_subject_with_comment_and_script_markup_stays_inside_the_popover_data(book):
    hostile = "<!--<script "
    sources = (book.src / "sources.yaml").read_text()
    book.write("sources.yaml", sources.replace("subject: Model M", f'subject: "{hostile}"', 1))
    book.build()
    page = book.html("index")
    found = re.search(r'<script type="application/json" id="kdalib-claims">(.*?)</script>', page, re.S)
    payload = found.group(1)
    # with no '<' in the payload an HTML parser never leaves the script's text state early or late
    assert "<" not in payload and ">" not in payload
    assert json.loads(payload)["m.params.total"]["what"].startswith(hostile)
