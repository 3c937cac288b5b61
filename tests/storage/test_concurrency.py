"""One writer and many readers at once (issue point 8): every record a reader sees is
complete and carries the value the writer wrote for its offset."""
import threading

from pylog import Log
from pylog.errors import OffsetOutOfRange


def value_for(offset: int) -> bytes:
    return b"%010d" % offset + b"." * (offset % 37)


def test_writer_and_readers(tmp_path):
    log = Log.open(tmp_path / "c-0", segment_bytes=8192, retention_bytes=64 * 1024, retention_ms=-1)
    stop = threading.Event()
    errors = []
    seen = [0] * 4

    def writer():
        try:
            n = 0
            for i in range(1500):
                k = 1 + i % 7
                log.append([value_for(n + j) for j in range(k)])
                n += k
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    def reader(idx):
        try:
            rounds = 0
            while not stop.is_set() or rounds < 2:
                rounds += 1
                start = max(log.log_start_offset, log.log_end_offset - 500)
                try:
                    prev = None
                    for rec in log.records(start):
                        assert rec.value == value_for(rec.offset), rec
                        assert prev is None or rec.offset == prev + 1
                        prev = rec.offset
                        seen[idx] += 1
                    off = log.log_start_offset
                    for b in log.read(off, 4096):
                        b.validate()
                except OffsetOutOfRange:
                    pass  # retention moved the start past us: allowed
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(s > 0 for s in seen)
    assert log.log_end_offset == sum(1 + i % 7 for i in range(1500))
    assert len(log.segments) < 20  # retention ran while readers read
    log.close()
