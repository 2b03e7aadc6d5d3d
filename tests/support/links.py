"""Check that links a person would click (printed URLs, links in Slack messages) work."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urldefrag

import requests


def broken_links(links: Iterable[str]) -> dict[str, str]:
    """link -> what is wrong with it, for every link that does not answer 200 to a GET
    (redirects followed, as a browser does); a link into a Markdown page with an #anchor also
    needs a heading that GitHub would give that anchor."""
    broken = {}
    for link in dict.fromkeys(links):
        page, anchor = urldefrag(link)
        try:
            response = requests.get(page, timeout=10)
        except requests.RequestException as error:
            broken[link] = f"{type(error).__name__}: {error}"
            continue
        if response.status_code != 200:
            broken[link] = f"HTTP {response.status_code}"
        elif anchor and page.endswith(".md") and anchor not in markdown_anchors(response.text):
            broken[link] = f"no heading for #{anchor}"
    return broken


def markdown_anchors(text: str) -> set[str]:
    """The anchors of a Markdown document's headings, as GitHub makes them: lower case, spaces
    to hyphens, punctuation dropped."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}
