"""The connection's corked writes: a known-length response leaves in one write."""

from __future__ import annotations

from types import SimpleNamespace

from servectl.server.answers import CorkedWrites


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.writes.append(b"|".join(parts))  # one call: what a writev sends

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def cycle(chunked: bool | None, length: int, method: str = "POST") -> SimpleNamespace:
    return SimpleNamespace(
        response_started=True, chunked_encoding=chunked, expected_content_length=length, scope={"method": method}
    )


def test_a_known_length_answer_is_one_write_streams_and_empty_bodies_are_not_held() -> None:
    sent = Transport()
    cork = CorkedWrites(sent)  # type: ignore[arg-type]
    cork.cycle = cycle(False, 7)
    cork.write(b"HEAD\r\n\r\n")
    assert sent.writes == []
    cork.write(b'{"y":9}')
    assert sent.writes == [b'HEAD\r\n\r\n{"y":9}']
    cork.cycle = cycle(True, 0)  # chunked (a stream): its head goes at once
    cork.write(b"HEAD2")
    cork.write(b"chunk")
    cork.cycle = cycle(False, 0)  # no body (204, HEAD): nothing to wait for
    cork.write(b"HEAD3")
    assert sent.writes[1:] == [b"HEAD2", b"chunk", b"HEAD3"]
    big = b"x" * (2**20)
    cork.cycle = cycle(False, len(big))  # a large body is not copied to join the head
    cork.write(b"HEAD5")
    cork.write(big)
    assert sent.writes[-1] == b"HEAD5|" + big
    cork.cycle = cycle(False, 5, "HEAD")  # a HEAD answer's body is never written: its head goes at once
    cork.write(b"HEAD6")
    assert sent.writes[-1] == b"HEAD6"
    cork.cycle = cycle(False, 5)
    cork.write(b"HEAD4")
    cork.close()  # a close never loses a held head
    assert sent.writes[-1] == b"HEAD4" and sent.closed and cork.is_closing()
