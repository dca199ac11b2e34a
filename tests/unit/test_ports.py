from __future__ import annotations

import pytest

from lameduck_operator.ports import one_line


class ClientError(Exception):
    """Shaped like the API client's ApiException: status, reason, and the response body."""

    def __init__(self, status: int, reason: str, body: str | bytes | None) -> None:
        super().__init__(f"({status})\nReason: {reason}\nHTTP response headers: ...\nHTTP response body: {body!r}")
        self.status, self.reason, self.body = status, reason, body


@pytest.mark.parametrize(
    ("err", "line"),
    [
        (ClientError(409, "Conflict", b'{"message": "object modified"}'), "409 object modified"),
        (ClientError(500, "Internal Server Error", "not json"), "500 Internal Server Error"),
        (ClientError(503, "Service Unavailable", None), "503 Service Unavailable"),
        (TimeoutError(), "TimeoutError"),
        (ValueError("first line\nsecond line"), "first line"),
    ],
    ids=["message from the body", "body not JSON", "no body", "no text", "many lines"],
)
def test_an_error_is_told_in_one_line(err: Exception, line: str) -> None:
    assert one_line(err) == line
