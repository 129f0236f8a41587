"""SIGINT and SIGTERM as a request that a training run honours at the end of a step.

A signal that arrives while the optimizer steps would leave half-updated weights, so inside
the training loop it is only noted: :class:`~longsep.training.callbacks.LastCheckpoint`
writes ``last.ckpt`` at the end of the current step and raises :class:`Interrupted`.
Outside the loop (data preparation, export, evaluation) it raises :class:`Interrupted` at
once. A second Ctrl-C while a save is pending stops at once too. The handlers are installed
for the duration of a ``with`` block and the previous ones restored after it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The run was stopped by ``signum``; a :class:`BaseException` so that no ``except
    Exception`` (Lightning's, a sweep's failure handling) turns it into a failed run.
    ``exit_code`` is the shell's convention for a signal: 128 + its number (130, 143)."""

    def __init__(self, signum: int, step: int | None = None) -> None:
        self.signum = int(signum)
        self.step = step
        super().__init__(f"{signal.Signals(self.signum).name} at step {step}")

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class InterruptRequest:
    """The signal received while deferring (``signum``), else None."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferring = False
        self._installed = False
        self._pid = os.getpid()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker: the parent decides
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os._exit(128 + signum)
        if self.deferring and self.signum is None:
            self.signum = signum
            log.warning(
                "%s received: saving last.ckpt at the end of this step, then stopping%s",
                signal.Signals(signum).name,
                " (Ctrl-C again to stop now)" if signum == signal.SIGINT else "",
            )
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[InterruptRequest]:
        """Handle SIGINT / SIGTERM inside the block; a no-op off the main thread (where
        Python cannot install handlers), where the signals keep their behaviour."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._pid = os.getpid()
        previous = {s: signal.getsignal(s) for s in SIGNALS}
        self._installed = True
        self.take_over()
        try:
            yield self
        finally:
            self._installed = False
            for s, handler in previous.items():
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)

    def take_over(self) -> None:
        """(Re)install this request's handlers: Lightning installs its own SIGTERM handler
        when fitting starts, which would stop a run without saving it."""
        if self._installed and threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                signal.signal(s, self._handle)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Inside the block a signal is noted (``signum``) instead of raised."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
