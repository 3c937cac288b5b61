"""Fuzz target: Kafka request frames, decoded and answered by the server's handlers.

    pip install atheris && python fuzz/fuzz_request.py -atheris_runs=1000000
    (then remove the data directory it names on stderr)

Every input is one request frame (without its size prefix), as a connection hands it
to the server.  The seed corpus is a valid request of every API version pylog
implements (tests/protocol/samples.py); atheris mutates from there.

Contract checked, per input:

* ``decode_request`` returns or raises InvalidRequest / UnsupportedRequest — nothing
  else, and never kills the process (kio's native reader did, on a huge array
  length: pylog reads requests with its own bounds-checked reader);
* the server's ``KafkaApis.handle`` (over a real Broker in a temporary directory)
  answers or asks to close the connection, and never logs an internal error
  (an exception a handler did not expect).
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pylog.errors import InvalidRequest  # noqa: E402
from pylog.protocol.codec import UnsupportedRequest, decode_request  # noqa: E402


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Harness:
    """An in-process server (no sockets) whose handlers the fuzzer drives."""

    def __init__(self, data_dir: str, settings_extra: "dict | None" = None) -> None:
        from pylog.broker import Broker
        from pylog.server.config import Listener, ServerConfig
        from pylog.server.server import KafkaServer

        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        # small files and few partitions per topic: a fuzzer creates topics by the
        # thousand, and every partition preallocates its segment and indexes
        settings = {"listeners": "PLAINTEXT://127.0.0.1:9092", "log.segment.bytes": 1 << 20,
                    "log.index.size.max.bytes": 4096, "max.partitions.per.topic": 8,
                    "offsets.topic.num.partitions": 2, "group.initial.rebalance.delay.ms": 0,
                    **(settings_extra or {})}
        self.config = ServerConfig.from_settings(settings, data_dir=data_dir)
        self.broker = Broker.open(data_dir, dict(self.config.broker_settings))
        self.broker.create_topic("t", 2)
        self.server = KafkaServer(self.config, self.broker, self.loop)
        self.conn = type("Conn", (), {"peer": "127.0.0.1:1", "listener": Listener("PLAINTEXT", "127.0.0.1", 9092),
                                      "principal": "User:ANONYMOUS", "sasl": None, "sasl_check": False,
                                      "close_after_write": False})()
        self.errors = _Errors()
        self._logger = logging.getLogger("pylog")
        self._saved = (self._logger.level, self._logger.propagate)
        self._logger.addHandler(self.errors)
        self._logger.setLevel(logging.WARNING)
        self._logger.propagate = False  # expected WARNINGs (closed connections) stay quiet

    def handle(self, frame: bytes) -> None:
        from pylog.server.connection import CloseConnection

        try:
            result = self.server.apis.handle(self.conn, frame, time.perf_counter())
        except CloseConnection:
            return
        if isinstance(result, asyncio.Future):  # let it finish if it can do so soon
            try:
                self.loop.run_until_complete(asyncio.wait_for(asyncio.shield(result), 0.05))
            except (asyncio.TimeoutError, Exception):
                pass
        if self.errors.records:
            rec = self.errors.records[0]
            self.errors.records.clear()
            raise AssertionError(f"internal error on input {bytes(frame).hex()}: {rec.getMessage()}\n"
                                 f"{rec.exc_text or ''}")

    def close(self) -> None:
        self.server.apis.close()
        self.server.authorizer.close()
        self._logger.removeHandler(self.errors)
        self._logger.setLevel(self._saved[0])
        self._logger.propagate = self._saved[1]
        self.broker.close()
        self.loop.close()
        asyncio.set_event_loop(None)


_harness = None


def one_input(data: bytes, harness: "Harness | None" = None) -> None:
    try:
        decode_request(data)
    except (InvalidRequest, UnsupportedRequest):
        pass
    if harness is not None:
        harness.handle(data)


def main() -> None:
    import atheris

    from tests.protocol.samples import sample_frames

    tmp = tempfile.mkdtemp(prefix="pylog-fuzz-request-")
    # libFuzzer ends the process with exit(): Python's cleanup never runs, so say where
    # the harness's broker keeps its data (a few hundred MB after a long run).
    print(f"fuzz_request: the harness broker's data is in {tmp}; remove it afterwards", file=sys.stderr)
    harness = Harness(tmp)
    corpus = os.path.join(tmp, "corpus")
    os.makedirs(corpus)
    for key, version, frame in sample_frames():
        with open(os.path.join(corpus, f"{key}-{version}"), "wb") as f:
            f.write(bytes(frame))
    argv = sys.argv + ([corpus] if not any(not a.startswith("-") for a in sys.argv[1:]) else [])
    atheris.instrument_all()
    atheris.Setup(argv, lambda data: one_input(data, harness))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
