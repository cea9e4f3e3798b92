"""Per-chunk decisions of the live runtime: the deadline and the degrade policy.

Both are small state machines fed with measured costs; the Pipeline asks them and
acts. They hold no references to stages, so they are tested with injected numbers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from rfstream.config import RuntimeConfig
from rfstream.types import Chunk


class DeadlinePolicy:
    """Decides, per chunk, whether it can still make its deadline, and grades it afterwards.

    The cost estimate is an exponentially weighted mean of recent processing times,
    so a chunk is shed only when even an average chunk could no longer finish in time.
    """

    def __init__(self, deadline_ms: float, *, may_shed: bool):
        self.deadline_ns = int(deadline_ms * 1e6)
        self.may_shed = may_shed
        self._cost_ns = 0.0

    def should_shed(self, chunk: Chunk, now_ns: int) -> bool:
        """Shed a chunk that waited too long to make its deadline.

        Only while an average chunk *can* make it: when the cost alone exceeds the deadline,
        every chunk is late however fresh, and shedding them all would stop results (and
        the cost estimate, which only processed chunks update) for good; the degrade policy
        handles that overload instead. Each shed also lets the estimate decay, so one slow
        outlier does not keep shedding.
        """
        if not self.may_shed or self._cost_ns >= self.deadline_ns:
            return False
        if now_ns + self._cost_ns > chunk.arrived_ns + self.deadline_ns:
            self._cost_ns *= 0.9
            return True
        return False

    def finished(self, chunk: Chunk, started_ns: int, done_ns: int) -> bool:
        """Record a processed chunk; True when it was late.

        Never late in a lossless run (``may_shed`` False: a replay as fast as processing goes):
        its chunks are read when processing asks for the next one, so there is no deadline to miss.
        """
        cost = done_ns - started_ns
        self._cost_ns = cost if not self._cost_ns else 0.8 * self._cost_ns + 0.2 * cost
        return self.may_shed and done_ns > chunk.arrived_ns + self.deadline_ns


DEGRADE_LEVELS = {
    0: "normal",
    1: "only the highest-priority detectors run",
    2: "spectrogram publication skipped",
    3: "every other chunk shed",
}


class DegradePolicy:
    """The degrade level as a pure state machine: per-chunk costs in, level changes out.

    ``load`` is an exponentially weighted mean of processing cost over the chunk
    period, scaled by the share of chunks still processed (level 3 processes
    half), so it reads as the pipeline's utilisation. Overload is ``load >
    high`` or ``late_limit`` late chunks among the last ``late_window``; after
    ``up_after`` overloaded chunks in a row the level steps up. After
    ``down_after`` calm chunks in a row (``load < low``, nothing late) it steps
    down. Each level is judged on its own costs (the mean restarts at a
    change), and a step down that is undone before it has held ``down_after``
    chunks doubles the calm needed next time (up to 8×, back to the configured
    value once level 0 has held that long), so the level does not flap between
    a level that is too slow and one that is fast enough.

    ``levels``: the levels that do something here (e.g. no level 1 when all
    detectors share one priority); the policy steps only through those. A reload
    can change them (:meth:`set_levels`): the level in force is then re-mapped to
    the highest new level at or below it, so it never outlives its table.
    """

    def __init__(
        self,
        *,
        levels: Sequence[int] = (0, 1, 2, 3),
        high: float = 0.8,
        low: float = 0.5,
        up_after: int = 5,
        down_after: int = 25,
        late_window: int = 10,
        late_limit: int = 3,
        alpha: float = 0.3,
    ) -> None:
        self.levels = tuple(sorted({0, *levels}))
        self.high, self.low = high, low
        self.up_after, self.base_down_after = up_after, down_after
        self.down_after = down_after
        self.late_limit = late_limit
        self.alpha = alpha
        self.level = 0
        self.load = 0.0
        self._have_load = False
        self._late: deque[bool] = deque(maxlen=late_window)
        self._over = 0
        self._calm = 0
        self._since_down: int | None = None  # chunks since the last step down, while it may be undone

    @classmethod
    def from_config(cls, rt: RuntimeConfig, levels: Sequence[int]) -> DegradePolicy:
        return cls(
            levels=levels,
            high=rt.degrade_load_high,
            low=rt.degrade_load_low,
            up_after=rt.degrade_up_chunks,
            down_after=rt.degrade_down_chunks,
        )

    def set_levels(self, levels: Sequence[int]) -> int:
        """New levels (a reload changed the detector set); returns the level in force after it.

        A level that no longer exists steps down to the highest remaining one below it (level 1
        without two detector priorities becomes 0) and is judged afresh from there.
        """
        self.levels = tuple(sorted({0, *levels}))
        if self.level not in self.levels:
            self._since_down = None
            self._change(max(lv for lv in self.levels if lv <= self.level))
        return self.level

    def observe(self, cost_s: float, period_s: float, *, late: bool = False) -> int | None:
        """One processed chunk's cost; returns the new level when it changes, else None."""
        duty = 0.5 if self.level >= 3 else 1.0
        sample = duty * cost_s / period_s if period_s > 0 else 0.0
        self.load = sample if not self._have_load else (1 - self.alpha) * self.load + self.alpha * sample
        self._have_load = True
        self._late.append(late)
        if self._since_down is not None:
            self._since_down += 1
            if self._since_down >= self.down_after:
                self._since_down = None  # the step down held
                if self.level == 0:
                    self.down_after = self.base_down_after
        overloaded = self.load > self.high or sum(self._late) >= self.late_limit
        calm = self.load < self.low and not any(self._late)
        self._over = self._over + 1 if overloaded else 0
        self._calm = self._calm + 1 if calm else 0
        index = self.levels.index(self.level)
        if self._over >= self.up_after and index + 1 < len(self.levels):
            if self._since_down is not None:  # undone before it held: be slower to step down again
                self.down_after = min(self.down_after * 2, 8 * self.base_down_after)
            self._since_down = None
            return self._change(self.levels[index + 1])
        if self._calm >= self.down_after and index > 0:
            self._since_down = 0
            return self._change(self.levels[index - 1])
        return None

    def _change(self, level: int) -> int:
        self.level = level
        self._over = self._calm = 0
        self._have_load = False
        self._late.clear()
        return level
