import itertools

import pytest

from tests.support.helpers import wait_until


def test_returns_the_first_truthy_value():
    counter = itertools.count()
    assert wait_until(lambda: next(counter) >= 3 and "done", timeout=5, interval=0) == "done"


def test_fails_with_the_message_after_the_timeout():
    with pytest.raises(AssertionError, match=r"still 0 \(waited 0.1 s\)"):
        wait_until(lambda: 0, timeout=0.1, message=lambda: "still 0")
