"""Child process of test_batch.py: validation errors kept in reference cycles, then collected."""
import gc
from pylog.records import build_batch, validate_batches
from pylog.errors import CorruptRecordError
good = build_batch([b"v" * 50] * 20)
keep = []
for i in range(300):
    data = bytearray(good); data[-1] ^= 0xFF
    frame = bytes(data)
    view = memoryview(frame)[0:]
    holder = {}
    try:
        validate_batches(view)
    except CorruptRecordError as exc:
        holder["error"] = exc          # error -> traceback -> frame -> (cffi buffer, view)
        holder["self"] = holder        # ... and a cycle back to the holder
    del view, frame, data, holder
    if i % 50 == 0:
        gc.collect()
        keep.append(bytes(10_000))     # reuse freed memory
gc.collect()
print("ok")
