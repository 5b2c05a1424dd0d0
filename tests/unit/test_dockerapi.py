"""Root's own GETs to a tenant's daemon: the answer's framing, read without http.client."""

from __future__ import annotations

import pytest

from dtenant_session.dockerapi import BadAnswer, parse_answer


def test_a_body_is_framed_by_its_content_length() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    assert parse_answer(raw) == (200, b"{}")


def test_a_chunked_body_is_put_together() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"
           b"3\r\n[1,\r\nA;ext=1\r\n2,3,4,5,6]\r\n0\r\nTrailer: x\r\n\r\n")  # fmt: skip
    assert parse_answer(raw) == (200, b"[1,2,3,4,5,6]")


def test_a_body_without_framing_runs_to_the_end_of_the_connection() -> None:
    assert parse_answer(b"HTTP/1.0 404 Not Found\r\nServer: x\r\n\r\nnot here") == (
        404,
        b"not here",
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",  # no end of head
        b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP
        b"HTTP/1.1 OK\r\n\r\n",  # no status
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",  # cut short
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",  # no last chunk
    ],
)
def test_an_answer_that_is_not_whole_http_is_refused(raw: bytes) -> None:
    with pytest.raises(BadAnswer):
        parse_answer(raw)
