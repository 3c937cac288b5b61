"""The console's in-memory history: the last hour of many time series at two resolutions.

Every series of one :class:`History` is sampled at the same ticks (the console's
sampler takes one sample of everything per second), so the times are kept once:

* **fine**: one point per tick for the last ``fine_points`` ticks (default 300: five
  minutes at 1 s);
* **coarse**: one point per ``coarse_ms`` (default a minute) for the last
  ``coarse_points`` of them (default 60: the hour), the mean of the ticks in it.

:meth:`History.points` joins them: coarse points older than the oldest fine point,
then the fine points.  A missing value (a broker that did not answer, a counter that
restarted) is ``None`` — a gap, never a made-up zero.  Memory is fixed per series
(``(fine_points + coarse_points)`` doubles, numpy), so a thousand partitions cost a
few megabytes.

:class:`Rates` turns counters into per-second rates: a counter that went down (its
broker restarted) gives a gap, not a negative rate.
"""
from __future__ import annotations

import math
import threading
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

__all__ = ["History", "Rates"]

Point = Tuple[int, Optional[float]]


class _Ring:
    __slots__ = ("times", "n", "head")

    def __init__(self, size: int) -> None:
        self.times = np.full(size, -1, dtype=np.int64)
        self.n = 0  # points written so far (capped at size)
        self.head = 0  # where the next point goes

    def order(self) -> np.ndarray:
        """Indices of the kept points, oldest first."""
        size = len(self.times)
        if self.n < size:
            return np.arange(self.n)
        return (np.arange(size) + self.head) % size


class History:
    """Time series keyed by strings, all sampled at the same ticks (module docstring).
    Thread-safe: the sampler writes while pages read."""

    def __init__(self, fine_points: int = 300, coarse_points: int = 60, coarse_ms: int = 60_000) -> None:
        if fine_points < 2 or coarse_points < 1 or coarse_ms < 1:
            raise ValueError("History needs fine_points >= 2, coarse_points >= 1 and coarse_ms >= 1")
        self._lock = threading.Lock()
        self.coarse_ms = coarse_ms
        self._fine = _Ring(fine_points)
        self._coarse = _Ring(coarse_points)
        self._fv: Dict[str, np.ndarray] = {}
        self._cv: Dict[str, np.ndarray] = {}
        self._acc: Dict[str, List[float]] = {}  # key -> [sum, count] of the open coarse bucket
        self._bucket: Optional[int] = None  # the open coarse bucket's start, ms

    def keys(self) -> List[str]:
        with self._lock:
            return list(self._fv)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._fv

    def tick(self, now_ms: int, values: Mapping[str, Optional[float]]) -> None:
        """One sample of every series at ``now_ms`` (ms; later than the last tick's).
        Series not in ``values`` get a gap; a key seen for the first time starts a
        series (gaps before)."""
        with self._lock:
            bucket = now_ms - now_ms % self.coarse_ms
            if self._bucket is not None and bucket != self._bucket:
                self._close_bucket()
            self._bucket = bucket
            f = self._fine
            i = f.head
            f.times[i] = now_ms
            f.head = (i + 1) % len(f.times)
            f.n = min(f.n + 1, len(f.times))
            for arr in self._fv.values():
                arr[i] = np.nan
            for key, v in values.items():
                arr = self._fv.get(key)
                if arr is None:
                    arr = self._fv[key] = np.full(len(f.times), np.nan)
                    self._cv[key] = np.full(len(self._coarse.times), np.nan)
                if v is None or not math.isfinite(v):
                    continue
                arr[i] = v
                acc = self._acc.get(key)
                if acc is None:
                    self._acc[key] = [float(v), 1.0]
                else:
                    acc[0] += v
                    acc[1] += 1.0

    def _close_bucket(self) -> None:
        c = self._coarse
        i = c.head
        c.times[i] = self._bucket
        c.head = (i + 1) % len(c.times)
        c.n = min(c.n + 1, len(c.times))
        for key, arr in self._cv.items():
            acc = self._acc.get(key)
            arr[i] = acc[0] / acc[1] if acc else np.nan
        self._acc = {}

    def forget(self, keys: Iterable[str]) -> None:
        """Drop series (a deleted topic's)."""
        with self._lock:
            for k in keys:
                self._fv.pop(k, None)
                self._cv.pop(k, None)
                self._acc.pop(k, None)

    def points(self, key: str) -> List[Point]:
        """``[(time_ms, value or None), ...]`` oldest first: the coarse points before the
        fine window, then the fine ones; [] for an unknown key."""
        with self._lock:
            fv = self._fv.get(key)
            if fv is None:
                return []
            f, c = self._fine, self._coarse
            fo = f.order()
            out: List[Point] = []
            first_fine = int(f.times[fo[0]]) if len(fo) else None
            if c.n:
                cv = self._cv[key]
                for j in c.order():
                    t = int(c.times[j])
                    if first_fine is not None and t + self.coarse_ms > first_fine:
                        continue
                    v = cv[j]
                    out.append((t, None if np.isnan(v) else float(v)))
            ft = f.times[fo].tolist()
            for t, v in zip(ft, fv[fo].tolist()):
                out.append((t, None if v != v else v))
            return out

    def last(self, key: str) -> Optional[float]:
        """The newest fine value of ``key`` (None: unknown, or a gap)."""
        with self._lock:
            fv = self._fv.get(key)
            f = self._fine
            if fv is None or not f.n:
                return None
            v = fv[(f.head - 1) % len(f.times)]
            return None if np.isnan(v) else float(v)


class Rates:
    """Per-second rates of counters between consecutive samples (module docstring)."""

    def __init__(self) -> None:
        self._prev: Dict[str, Tuple[int, float]] = {}

    def update(self, now_ms: int, counters: Mapping[str, float],
               times: Optional[Mapping[str, int]] = None) -> Dict[str, Optional[float]]:
        """The rate of every counter in ``counters`` since its previous value (None for a
        new counter, one that went down, or no time passed).  ``times`` gives the time
        (ms) a counter was read when it is not ``now_ms`` (the answer of a slow broker).
        Counters missing here are forgotten: their next value starts afresh."""
        out: Dict[str, Optional[float]] = {}
        prev = self._prev
        new: Dict[str, Tuple[int, float]] = {}
        for key, v in counters.items():
            t = now_ms if times is None else times.get(key, now_ms)
            p = prev.get(key)
            rate: Optional[float] = None
            if p is not None and t > p[0] and v >= p[1]:
                rate = (v - p[1]) * 1000.0 / (t - p[0])
            out[key] = rate
            new[key] = (t, v)
        self._prev = new
        return out
