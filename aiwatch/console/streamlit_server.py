"""``python -m aiwatch.console.streamlit_server run APP [streamlit options]``: ``streamlit run``, with the console's
data source made first, in the server's process (what ``aiwatch console`` runs).

Streamlit runs the app's script only when a browser session opens it: a scrape source made there started its scrape
thread, and so its history, at the first page view. Made here from the same ``AIWATCH_CONSOLE_*`` variables, it is
the one :func:`aiwatch.console.config.shared_source` hands every session, scraping from the console's start.
"""

from __future__ import annotations

import contextlib


def main() -> None:
    from aiwatch.console.config import ConsoleConfig, shared_source

    with contextlib.suppress(ValueError):  # `aiwatch console` checked it; the page says what is wrong otherwise
        shared_source(ConsoleConfig.from_env())
    from streamlit.web.cli import main as streamlit

    streamlit(prog_name="streamlit")


if __name__ == "__main__":
    main()
