"""The connection state table: every cell walked, every missing cell refused."""

import socket

import pytest

from tests.unit.lifecycle import check_cell, check_column, documented
from workers.pool import connection as cx

EVENTS = sorted({e for row in cx.TRANSITIONS.values() for e in row})

EXPECTED = {
    (cx.CONNECTING, "connected"): cx.IDLE,
    (cx.CONNECTING, "secure"): cx.HANDSHAKING,
    (cx.HANDSHAKING, "secured"): cx.IDLE,
    (cx.IDLE, "checkout"): cx.RESERVED,
    (cx.RESERVED, "send"): cx.BUSY,
    (cx.RESERVED, "check"): cx.CHECKING,
    (cx.RESERVED, "release"): cx.IDLE,
    (cx.CHECKING, "done"): cx.RESERVED,
    (cx.BUSY, "done"): cx.IDLE,
    (cx.BUSY, "drain"): cx.DRAINING,
    (cx.DRAINING, "done"): cx.CLOSED,
    **{(s, "close"): cx.CLOSED for s in cx.STATES if s != cx.CLOSED},
}


@pytest.fixture
def conn() -> cx.Connection:
    a, b = socket.socketpair()  # a real fd for the object; no network is used
    c = cx.Connection(a, 0)
    yield c
    a.close()
    b.close()


@pytest.mark.parametrize("state", cx.STATES)
@pytest.mark.parametrize("event", EVENTS)
def test_every_cell(conn: cx.Connection, state: str, event: str) -> None:
    check_cell(conn, state, event, EXPECTED.get((state, event)))


@pytest.mark.parametrize("state", cx.STATES)
@pytest.mark.parametrize("event", EVENTS)
def test_request_path_moves_are_the_same_table(state: str, event: str) -> None:
    """``ON[event][state]`` (the request path's lookup) makes exactly fire()'s move."""
    check_column(cx.ON, state, event, EXPECTED.get((state, event)))


def test_table_has_every_state_and_closed_is_terminal() -> None:
    assert set(cx.TRANSITIONS) == set(cx.STATES)
    assert cx.TRANSITIONS[cx.CLOSED] == {}


def test_request_lifecycle_and_repr(conn: cx.Connection) -> None:
    for event in ("connected", "checkout", "send", "done"):
        conn.fire(event)
    assert conn.state == cx.IDLE
    assert (
        repr(conn) == f"<Connection fd={conn.fd} IDLE target=0 requests=0 status=0 complete=False>"
    )


def test_parser_callbacks_head_and_keepalive(conn: cx.Connection) -> None:
    conn.reset_response(head_only=True)
    conn.parser.feed_data(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
    assert (conn.complete, conn.status, conn.keep_alive) == (True, 200, True)
    conn.reset_response(head_only=False)  # the HEAD swapped in a fresh parser
    conn.parser.feed_data(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    assert (conn.complete, conn.status, conn.keep_alive) == (True, 204, False)


def test_architecture_doc_table_matches_the_code() -> None:
    assert documented("## Connection state table", cx.STATES) == cx.TRANSITIONS
