"""Hypothesis stateful test (issue point 9): a Log and a plain in-memory model go through
random append / read / truncate / roll / retention / delete_records / flush / reopen /
crash sequences and must always agree.

The model is a list of (offset, key, value, timestamp) plus the log start offset.  A
crash copies the directory as the page cache has it (a process kill) and may zero a
random number of bytes at the end of the active segment's data (a torn write): the log
must then reopen to a prefix of the model that keeps everything flushed.
"""
import os
import shutil

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pylog import Log

SEG = 1024


class LogMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        import tempfile

        self.root = tempfile.mkdtemp(prefix="pylog-stateful-")
        self.gen = 0
        self.path = os.path.join(self.root, "m-0")
        self.log = Log.open(self.path, segment_bytes=SEG, retention_ms=-1)
        self.model = []  # (offset, key, value, timestamp)
        self.start = 0
        self.flushed = 0

    def _open(self, path):
        return Log.open(path, segment_bytes=SEG, retention_ms=-1)

    @property
    def end(self):
        return self.model[-1][0] + 1 if self.model else self.start

    @rule(values=st.lists(st.binary(max_size=120), min_size=1, max_size=12),
          keyed=st.booleans(), ts=st.integers(min_value=0, max_value=2**40))
    def append(self, values, keyed, ts):
        keys = [b"k%d" % len(v) for v in values] if keyed else None
        first = self.log.append(values, keys=keys, timestamps=[ts] * len(values))
        assert first == self.end
        for i, v in enumerate(values):
            self.model.append((first + i, keys[i] if keys else None, v, ts))

    @rule(data=st.data())
    def read_records(self, data):
        offset = data.draw(st.integers(min_value=self.start, max_value=self.end))
        got = [(r.offset, r.key, r.value, r.timestamp) for r in self.log.records(offset)]
        assert got == [m for m in self.model if m[0] >= offset]

    @rule(data=st.data(), max_bytes=st.integers(min_value=0, max_value=3000))
    def read_batches(self, data, max_bytes):
        offset = data.draw(st.integers(min_value=self.start, max_value=self.end))
        batches = self.log.read(offset, max_bytes=max_bytes)
        if offset == self.end:
            assert batches == []
            return
        assert batches and batches[0].base_offset <= offset <= batches[0].last_offset
        for b in batches:
            b.validate()

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def truncate(self, data):
        offset = data.draw(st.integers(min_value=self.start, max_value=self.end))
        self.log.truncate_to(offset)
        new_end = self.log.log_end_offset
        assert new_end <= offset
        # a batch straddling `offset` goes whole (Kafka's truncateTo); if it also held the
        # log start, the start follows the end down (Kafka: min(target, logStartOffset))
        self.model = [m for m in self.model if m[0] < new_end]
        self.start = min(self.start, new_end)
        self.flushed = min(self.flushed, new_end)

    @rule()
    def roll(self):
        self.log.roll()

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete_records(self, data):
        before = data.draw(st.integers(min_value=self.start, max_value=self.end))
        self.log.delete_records(before)
        self.start = max(self.start, before)
        self.model = [m for m in self.model if m[0] >= self.start]

    @rule()
    def flush(self):
        self.log.flush()
        self.flushed = self.end

    @rule()
    def reopen(self):
        self.log.close()
        self.log = self._open(self.path)
        self.flushed = self.end

    @rule(tear=st.integers(min_value=0, max_value=200))
    def crash(self, tear):
        self.gen += 1
        dst = os.path.join(self.root, f"m{self.gen}-0")
        shutil.copytree(self.path, dst)
        os.unlink(os.path.join(dst, ".lock"))
        active = self.log.segments[-1]
        size = active.log_size
        self.log.close()
        shutil.rmtree(self.path)
        self.path = dst
        if tear and size and active.base_offset >= self.flushed:
            # a torn tail: only unflushed bytes may be lost
            name = os.path.join(dst, f"{active.base_offset:020d}.log")
            with open(name, "r+b") as f:
                f.seek(max(0, size - tear))
                f.write(bytes(min(tear, size)))
        self.log = self._open(dst)
        end = self.log.log_end_offset
        # everything flushed survives; nothing appears that was not appended
        assert self.flushed <= end <= self.end, (self.flushed, end, self.end)
        self.model = [m for m in self.model if m[0] < end]
        self.start = min(self.start, end)
        self.flushed = end

    @invariant()
    def offsets_agree(self):
        assert self.log.log_end_offset == self.end
        assert self.log.log_start_offset == self.start

    def teardown(self):
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


TestLogStateful = LogMachine.TestCase
TestLogStateful.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
