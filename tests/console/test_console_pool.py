"""The console's daemon pool: leaving a :class:`Prefetch` block, or closing a scrape source, while a call is still
queued behind busy workers returns once the running calls do (the queued one is cancelled, never run)."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import Future

from aiwatch.console.pool import Prefetch
from aiwatch.console.scrape import ScrapeSource
from tests.servers import wait_until

#: seconds a test waits for what must happen (a guard against a hang, not a bound on speed)
GUARD = 60


class Rerun(BaseException):
    """What Streamlit raises in a script it reruns or stops: past any ``except Exception``."""


def test_leaving_a_prefetch_with_a_question_still_queued_returns_once_the_running_ones_do() -> None:
    release, running = threading.Event(), threading.Semaphore(0)
    ran: list[int] = []
    answers: list[Future[None]] = []
    left = threading.Event()

    def question(i: int) -> None:
        ran.append(i)
        running.release()
        release.wait(GUARD)

    def view() -> None:
        try:
            with Prefetch() as prefetch:
                for i in range(9):  # 8 workers: the 9th waits in the queue
                    prefetch(lambda i=i: question(i))
                    answers.append(prefetch._asked[-1])
                for _ in range(8):
                    assert running.acquire(timeout=GUARD)
                raise Rerun
        except Rerun:
            left.set()

    thread = threading.Thread(target=view, daemon=True)
    thread.start()
    # the block is left with the 9th still queued: it is cancelled there (released before, a worker freed by the
    # release could take it first, as on a loaded machine where the view had not reached the block's end in 0.2 s)
    wait_until(lambda: len(answers) == 9 and answers[8].cancelled(), timeout=GUARD,
               what="the queued question cancelled")
    assert not left.wait(0.2)  # the 8 running questions are waited for
    release.set()
    assert left.wait(GUARD), "the with-block never returned: a cancelled, queued question was waited for"
    assert sorted(ran) == list(range(8)) and answers[8].cancelled()


def test_closing_a_scrape_source_while_a_scrape_is_queued_lets_scrape_once_return() -> None:
    with socket.socket() as server:  # accepts (the backlog) and never answers
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        port = server.getsockname()[1]
        source = ScrapeSource([f"http://127.0.0.1:{port}/m{i}" for i in range(9)], interval=2, timeout=1.0,
                              start=False)
        returned = threading.Event()
        threading.Thread(target=lambda: (source.scrape_once(), returned.set()), daemon=True).start()
        assert not returned.wait(0.3)  # 8 scrapes wait for an answer, the 9th for a worker
        source.close()
        assert returned.wait(GUARD), "scrape_once never returned: the scrape close() cancelled was waited for"
