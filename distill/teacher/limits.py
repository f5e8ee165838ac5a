"""Rate limits, API-key rotation and retry timing for the teacher's async requests."""

from __future__ import annotations

import asyncio
import random
import time
from email.utils import parsedate_to_datetime

from distill.errors import TeacherError


class TokenBucket:
    """`per_minute` units a minute with a burst of `burst_s` seconds' worth; a None limit never waits."""

    def __init__(self, per_minute: float | None, burst_s: float = 0.1):
        self.rate = per_minute / 60 if per_minute else None
        self.capacity = max(1.0, (self.rate or 0) * burst_s)
        self.tokens, self.t = self.capacity, time.monotonic()

    async def take(self, n: float = 1.0) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.t) * self.rate)
        self.t = now
        self.tokens -= n  # reserve now, so callers queue up in order
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)

    def refund(self, n: float) -> None:
        """Correct an estimate once the real count is known (negative n charges more)."""
        if self.rate is not None:
            self.tokens = min(self.capacity, self.tokens + n)


class KeyPool:
    """API keys by env-var name; a rate-limited key cools down, a rejected key is dropped.

    After a 429 a key's requests are also spaced out (by the wait the server asked for, growing on
    each further 429 and shrinking slowly on success), so the requests that were waiting do not
    all hit the limit again at the same moment."""

    def __init__(self, keys: list[tuple[str, str]]):
        self.names = [name for name, _ in keys]
        self.ready_at = [0.0] * len(keys)
        self.gap = [0.0] * len(keys)
        self.dead = [False] * len(keys)
        self._next = 0

    async def acquire(self) -> int:
        """Index of the key to use next: round-robin over ready keys, else wait for the first to cool."""
        while True:
            alive = [i for i in range(len(self.names)) if not self.dead[i]]
            if not alive:
                raise KeyRejected(f"every API key was rejected ({', '.join(self.names)})")
            now = time.monotonic()
            ready = [i for i in alive if self.ready_at[i] <= now]
            if ready:
                i = min(ready, key=lambda j: (j - self._next) % len(self.names))
                self._next = i + 1
                self.ready_at[i] = now + self.gap[i]
                return i
            await asyncio.sleep(min(self.ready_at[i] for i in alive) - now)

    def cool(self, i: int, seconds: float) -> None:
        self.ready_at[i] = max(self.ready_at[i], time.monotonic() + seconds)
        self.gap[i] = max(self.gap[i] * 1.25, min(seconds, 1.0))

    def ok(self, i: int) -> None:
        self.gap[i] *= 0.98

    def reject(self, i: int) -> bool:
        """Drop key i; True the first time (so the caller warns once)."""
        first = not self.dead[i]
        self.dead[i] = True
        return first


class KeyRejected(TeacherError):
    pass


def retry_after(headers) -> float | None:
    """Seconds the server asks us to wait: `retry-after-ms`, `retry-after` seconds or an HTTP date."""
    if headers is None:
        return None
    if ms := headers.get("retry-after-ms"):
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def backoff(attempt: int, base: float, cap: float, server_wait: float | None = None) -> float:
    """Exponential backoff with jitter; a server's Retry-After wins (plus a little jitter)."""
    if server_wait is not None:
        return server_wait * random.uniform(1.0, 1.2)
    return min(cap, base * 2**attempt) * random.uniform(0.5, 1.0)
