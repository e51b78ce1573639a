"""The query watchdog: one thread that interrupts what outlives its deadline."""

from __future__ import annotations

import threading
import time

from flightpipe.warehouse.watchdog import Watchdog


def test_a_block_that_outlives_its_deadline_gets_the_callback() -> None:
    dog = Watchdog()
    fired = threading.Event()
    with dog.guard(0.05, fired.set):
        assert fired.wait(5), "the watchdog never fired"


def test_a_block_that_ends_in_time_is_left_alone() -> None:
    dog = Watchdog()
    fired = threading.Event()
    with dog.guard(0.2, fired.set):
        pass
    # Wait past the deadline: the ended entry must not fire.
    assert not fired.wait(0.5)


def test_a_shorter_deadline_added_later_fires_first() -> None:
    dog = Watchdog()
    order: list[str] = []
    done = threading.Event()

    def long() -> None:
        order.append("long")
        done.set()

    with dog.guard(1.0, long):
        # The watchdog is asleep until the 1 s deadline; the new 0.05 s one must wake it.
        with dog.guard(0.05, lambda: order.append("short")):
            started = time.monotonic()
            while not order and time.monotonic() - started < 5:
                time.sleep(0.01)
            assert order == ["short"]
        assert done.wait(5)
    assert order == ["short", "long"]


def test_many_concurrent_guards_fire_only_for_the_slow_ones() -> None:
    dog = Watchdog()
    fired: list[int] = []

    def work(i: int) -> None:
        with dog.guard(0.1, lambda: fired.append(i)):
            if i % 5 == 0:
                time.sleep(0.4)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(fired) == [0, 5, 10, 15]
