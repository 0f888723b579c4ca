"""The client's WebSocket framing (streamer/wsframes.py), checked against websockets' own frame codec: what
websockets serialises as a server, our reader must read back exactly, in any split of the byte stream; what
we send, websockets must parse as a server. Every protocol violation closes with RFC 6455's code."""

from __future__ import annotations

import random
import struct

import pytest
from websockets.frames import Frame
from websockets.frames import Opcode as WsOpcode
from websockets.streams import StreamReader

from streamer.wsframes import Close, CloseCode, Control, FrameReader, Opcode, client_frame, close_payload


def server_frame(opcode: WsOpcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=False)


def parse_client_frame(data: bytes) -> Frame:
    """websockets reading our bytes as a server does (a client's frames must be masked)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=True)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("websockets wanted more bytes than the frame has")


def feed_in_pieces(reader: FrameReader, stream: bytes, rng: random.Random) -> list[str | bytes]:
    messages: list[str | bytes] = []
    pos = 0
    while pos < len(stream):
        step = rng.choice((1, 2, 3, 7, 64, 1000, 20000))
        messages.extend(reader.feed(stream[pos : pos + step]))
        pos += step
    return messages


def random_text(rng: random.Random) -> str:
    size = rng.choice((0, 1, 125, 126, 127, 300, 65535, 65536, 70000))
    alphabet = "abc{}\":,0123456789é€😀"
    return "".join(rng.choice(alphabet) for _ in range(size // 2))


def test_reads_what_websockets_writes_in_any_split() -> None:
    """Text and binary messages, fragmented or not, with pings and pongs between (also between fragments):
    the same messages in the same order, and the same controls, however the bytes are cut."""
    rng = random.Random(1305)
    for _ in range(30):
        stream = b""
        expected: list[str | bytes] = []
        controls: list[Control] = []
        for _ in range(rng.randint(1, 12)):
            binary = rng.random() < 0.2
            text = random_text(rng)
            payload = text.encode()
            message: str | bytes = payload if binary else text
            opcode = WsOpcode.BINARY if binary else WsOpcode.TEXT
            if rng.random() < 0.3 and len(payload) > 3:
                cuts = sorted(rng.sample(range(1, len(payload)), 2))
                parts = [payload[: cuts[0]], payload[cuts[0] : cuts[1]], payload[cuts[1] :]]
                stream += server_frame(opcode, parts[0], fin=False)
                ping = bytes(rng.randrange(256) for _ in range(rng.randint(0, 125)))
                stream += server_frame(WsOpcode.PING, ping)
                controls.append(Control(Opcode.PING, ping))
                stream += server_frame(WsOpcode.CONT, parts[1], fin=False)
                stream += server_frame(WsOpcode.CONT, parts[2], fin=True)
            else:
                stream += server_frame(opcode, payload)
            expected.append(message)
            if rng.random() < 0.3:
                pong = bytes(rng.randrange(256) for _ in range(4))
                stream += server_frame(WsOpcode.PONG, pong)
                controls.append(Control(Opcode.PONG, pong))
        reader = FrameReader(max_size=1 << 20)
        assert feed_in_pieces(reader, stream, rng) == expected
        assert reader.take_controls() == controls
        assert reader.error is None and reader.close is None
        assert reader.controls == []


def test_the_whole_stream_at_once_and_byte_by_byte_agree() -> None:
    frames = [f'{{"stream":"btcusdt@trade","data":{{"t":{i}}}}}' for i in range(200)]
    stream = b"".join(server_frame(WsOpcode.TEXT, f.encode()) for f in frames)
    whole = FrameReader(1 << 20).feed(stream)
    one = FrameReader(1 << 20)
    single = [m for i in range(len(stream)) for m in one.feed(stream[i : i + 1])]
    assert whole == single == frames


@pytest.mark.parametrize(
    ("stream", "code"),
    [
        (Frame(WsOpcode.TEXT, b"hi").serialize(mask=True), CloseCode.PROTOCOL_ERROR),  # a server must not mask
        (bytes((0xC1, 2)) + b"hi", CloseCode.PROTOCOL_ERROR),  # RSV1 set: no extension was negotiated
        (bytes((0x83, 0)), CloseCode.PROTOCOL_ERROR),  # opcode 3 is reserved
        (bytes((0x0B | 0x80, 0)), CloseCode.PROTOCOL_ERROR),  # opcode 11 is reserved
        (bytes((0x09, 0)), CloseCode.PROTOCOL_ERROR),  # a fragmented ping
        (bytes((0x89, 126)) + struct.pack("!H", 126) + b"x" * 126, CloseCode.PROTOCOL_ERROR),  # ping > 125
        (server_frame(WsOpcode.CONT, b"lost"), CloseCode.PROTOCOL_ERROR),  # continuation of nothing
        (server_frame(WsOpcode.TEXT, b"a", fin=False) + server_frame(WsOpcode.TEXT, b"b"), CloseCode.PROTOCOL_ERROR),
        (server_frame(WsOpcode.TEXT, b"\xff\xfe"), CloseCode.INVALID_DATA),
        (server_frame(WsOpcode.TEXT, b"\xe2\x82", fin=False) + server_frame(WsOpcode.CONT, b"x"),
         CloseCode.INVALID_DATA),  # a character cut by fragmentation is fine; a broken one is not
        (server_frame(WsOpcode.CLOSE, b"\x03"), CloseCode.PROTOCOL_ERROR),  # a one-byte close payload
        (server_frame(WsOpcode.CLOSE, struct.pack("!H", 1005)), CloseCode.PROTOCOL_ERROR),  # local-only code
        (server_frame(WsOpcode.CLOSE, struct.pack("!H", 1000) + b"\xff"), CloseCode.INVALID_DATA),
    ],
)
def test_a_protocol_violation_stops_the_reader_with_its_code(stream: bytes, code: CloseCode) -> None:
    before = server_frame(WsOpcode.TEXT, b'{"ok":1}')
    after = server_frame(WsOpcode.TEXT, b'{"never":1}')
    reader = FrameReader(max_size=1 << 20)
    assert reader.feed(before + stream + after) == ['{"ok":1}']  # what came before is kept
    assert reader.error is not None and reader.error.code == code
    assert reader.stopped
    assert reader.feed(after) == []  # nothing after it is read


def test_a_fragment_split_inside_a_character_is_joined_first() -> None:
    euro = "€".encode()
    stream = server_frame(WsOpcode.TEXT, euro[:1], fin=False) + server_frame(WsOpcode.CONT, euro[1:])
    reader = FrameReader(1 << 20)
    assert reader.feed(stream) == ["€"]
    assert reader.error is None


def test_a_message_over_max_size_is_refused_from_its_header_alone() -> None:
    """Only the header of a 10 MB frame is fed: the reader says 1009 without waiting for (or buffering) the
    payload; the limit counts the whole of a fragmented message too."""
    reader = FrameReader(max_size=1000)
    assert reader.feed(struct.pack("!BBQ", 0x81, 127, 10_000_000)) == []
    assert reader.error == Close(CloseCode.MESSAGE_TOO_BIG, "message of 10000000 bytes over 1000")
    assert reader.feed(b"x" * 1000) == []

    exact = FrameReader(max_size=1000)
    assert exact.feed(server_frame(WsOpcode.TEXT, b"y" * 1000)) == ["y" * 1000]

    fragmented = FrameReader(max_size=1000)
    stream = server_frame(WsOpcode.TEXT, b"a" * 600, fin=False) + server_frame(WsOpcode.CONT, b"b" * 600)
    assert fragmented.feed(stream) == []
    assert fragmented.error is not None and fragmented.error.code == CloseCode.MESSAGE_TOO_BIG


def test_the_servers_close_frame_ends_reading() -> None:
    reader = FrameReader(1 << 20)
    stream = (server_frame(WsOpcode.TEXT, b"last") + server_frame(WsOpcode.CLOSE, struct.pack("!H", 1001) + b"bye")
              + server_frame(WsOpcode.TEXT, b"after"))
    assert reader.feed(stream) == ["last"]
    assert reader.close == Close(1001, "bye")
    assert reader.error is None and reader.stopped

    empty = FrameReader(1 << 20)
    empty.feed(server_frame(WsOpcode.CLOSE, b""))
    assert empty.close == Close(CloseCode.NO_STATUS)


@pytest.mark.parametrize(
    ("opcode", "size"),
    [(Opcode.TEXT, size) for size in (0, 1, 125, 126, 65535, 65536, 100_000)]
    + [(control, size) for control in (Opcode.PING, Opcode.PONG, Opcode.CLOSE) for size in (2, 4, 125)],
)
def test_websockets_reads_our_client_frames(opcode: Opcode, size: int) -> None:
    payload = bytes(random.Random(size).randrange(256) for _ in range(size))
    if opcode is Opcode.TEXT:
        payload = ("é" * (size // 2) + "a" * (size % 2)).encode()  # exactly `size` bytes
    if opcode is Opcode.CLOSE:
        payload = struct.pack("!H", 1000) + b"r" * max(0, size - 2)
    mask = bytes((1, 2, 254, 255))
    frame = parse_client_frame(client_frame(opcode, payload, mask))
    assert frame.opcode == WsOpcode(opcode) and frame.fin
    assert frame.data == payload


def test_a_close_reason_is_cut_to_fit_whole_characters() -> None:
    payload = close_payload(Close(1000, "€" * 100))  # 300 bytes of reason
    assert len(payload) <= 125
    assert payload[:2] == struct.pack("!H", 1000)
    assert payload[2:].decode() == "€" * 41  # 123 bytes: 41 whole characters
