"""The crawl's download threads: bounded queue, per-query completion, failures that do not kill a thread."""

from __future__ import annotations

import logging
import threading
import time

import pandas as pd
import pytest

from crawling.stage import Downloads, Pending
from crawling.state import Outcome, UrlBook


def test_submit_blocks_at_the_limit_and_wait_returns_when_all_are_done() -> None:
    downloads = Downloads(threads=2, limit=3)
    release = threading.Event()
    started: list[int] = []
    done: list[int] = []

    def task(i: int) -> None:
        started.append(i)
        release.wait(5)
        done.append(i)

    pending = Pending()
    for i in range(3):
        downloads.submit(pending, task, i)
    blocked = threading.Thread(target=downloads.submit, args=(pending, task, 3))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive() and sorted(started) == [0, 1]  # 2 threads busy, 1 queued: the 4th waits for a slot
    release.set()
    blocked.join(5)
    pending.wait()
    assert sorted(done) == [0, 1, 2, 3]
    Pending().wait()  # nothing queued: returns at once
    downloads.shutdown()


def test_a_failing_task_is_logged_and_the_threads_go_on(caplog: pytest.LogCaptureFixture) -> None:
    downloads = Downloads(threads=1, limit=2)
    done: list[int] = []

    def task(i: int) -> None:
        if i == 0:
            raise OSError("disk full")
        done.append(i)

    pending = Pending()
    with caplog.at_level(logging.ERROR, logger="crawling.stage"):
        for i in range(5):
            downloads.submit(pending, task, i)
        pending.wait()
    downloads.shutdown()
    assert done == [1, 2, 3, 4] and "download task failed" in caplog.text


def test_a_url_claimed_twice_is_fetched_once_and_the_second_waits_for_its_outcome() -> None:
    book = UrlBook(pd.DataFrame(), set(), retry_failed=False)
    known, fetching, mine = book.claim("http://h/1.jpg")
    assert known is None and fetching is not None and mine
    seen: list[Outcome] = []

    def second() -> None:
        other_known, other, other_mine = book.claim("http://h/1.jpg")
        assert other_known is None and other is fetching and not other_mine
        seen.append(other.result())

    waiter = threading.Thread(target=second)
    waiter.start()
    time.sleep(0.1)
    assert not seen
    book.settle("http://h/1.jpg", Outcome("ok", sha256="a" * 64))
    waiter.join(5)
    assert seen == [Outcome("ok", sha256="a" * 64)]
    assert book.claim("http://h/1.jpg") == (Outcome("ok", sha256="a" * 64), None, False)
