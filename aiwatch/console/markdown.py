"""Text the console did not write (label values, alert annotations), placed safely into Streamlit Markdown.

Alert labels and annotations come from whatever the scraped services and the rules put there: a label value such as
``[log in](https://evil.example)``, ``![x](https://tracker.example/p.png)``, ``$\\LaTeX$`` or ``:red[...]`` must show
as that text, never as a link, an image, a formula or colour. :func:`escape` backslash-escapes every ASCII
punctuation character (CommonMark lets any of them be escaped), and :func:`link` writes a link only to an http(s)
URL, percent-encoding what could end the link early. The console's own Markdown (the runbooks, its headings) needs
none of this.

    >>> escape("[log in](https://evil.example)")
    '\\\\[log in\\\\]\\\\(https\\\\:\\\\/\\\\/evil\\\\.example\\\\)'
    >>> link("runbook", "https://wiki.example.com/a b(c)")
    '[runbook](https://wiki.example.com/a%20b%28c%29)'
    >>> link("runbook", "javascript:alert(1)")
    'runbook (javascript\\\\:alert\\\\(1\\\\))'
"""

from __future__ import annotations

import re
import string
from urllib.parse import quote, urlparse

_PUNCTUATION = re.compile("([" + re.escape(string.punctuation) + "])")
#: characters left as they are in a link's URL; the rest are percent-encoded (so ``(``, ``)``, ``<``, ``>``,
#: spaces and quotes cannot end or break the Markdown link)
_URL_SAFE = ":/?&=#%@+,;~!*'-._"


def escape(text: object) -> str:
    """``text`` as Markdown that renders exactly as that text, on one line."""
    return _PUNCTUATION.sub(r"\\\1", " ".join(str(text).split()))


def link(label: str, url: str) -> str:
    """A Markdown link to ``url`` when it is an http(s) URL (or a query on this page, ``?...``); otherwise the
    label followed by the URL as plain text. ``label`` is the console's own text."""
    parsed = urlparse(url)
    if url.startswith("?") or (parsed.scheme in ("http", "https") and parsed.netloc):
        return f"[{label}]({quote(url, safe=_URL_SAFE)})"
    return f"{label} ({escape(url)})"
