"""Background work in the TUI: how it starts, how its result reaches a screen, and where its errors go.

Every registry, file and Slurm call runs in a thread worker, and two rules hold for all of them:

- A result is applied by the screen it is for, in that screen's own message loop (`deliver`). A screen
  that was popped, or that is being torn down while the app quits, has stopped its loop, so the result is
  dropped there instead of reaching widgets that are already gone. (App.call_from_thread runs the
  callback on the app's loop whatever became of the screen: a worker that finished late crashed the app.)
- An exception ends the worker, never the app: every worker belongs to the app and does not exit it on
  error. The app has one place that turns a failure into a notification (`failure_note`): its
  Worker.StateChanged handler for a worker that raised, and its WorkFailed handler for a result that
  raised while shown. Worker messages do not bubble, which is why screens' workers are the app's too.
"""

from __future__ import annotations

import contextvars
import functools
from typing import Any, Callable, Optional

from textual.message_pump import MessagePump
from textual.worker import NoActiveWorker, Worker, active_worker, get_current_worker

from slurmml.tui.messages import WorkFailed

NOTE_CHARS = 300


def background(what: str, group: str, exclusive: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Worker]]:
    """Decorate a method of the app or of a screen to run it in a thread worker; `what` names it if it fails."""

    def decorate(method: Callable[..., Any]) -> Callable[..., Worker]:
        @functools.wraps(method)
        def start(self: Any, *args: Any, **kwargs: Any) -> Worker:
            # the thread runs in a copy of this context (as asyncio.to_thread does), so `self.app` still finds
            # the app after a screen was popped and has no parent to find it through
            context = contextvars.copy_context()

            def work() -> Any:
                worker = get_current_worker()  # set in the thread's own context: carry it into the copy

                def run() -> Any:
                    active_worker.set(worker)
                    return method(self, *args, **kwargs)

                return context.run(run)

            return self.app.run_worker(work, name=method.__name__, group=group, description=what,
                                       exclusive=exclusive, thread=True, exit_on_error=False)

        return start

    return decorate


def deliver(target: MessagePump, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """From a worker: run callback(*args, **kwargs) in `target`'s message loop, or nowhere if it has closed.

    A worker that was superseded (an exclusive worker started after it: the metric changed again while it
    ranked) delivers nothing, so an older answer never replaces a newer one. A callback that raises is
    reported to the app (WorkFailed), like a worker that raises.
    """
    try:
        worker: Optional[Worker] = get_current_worker()
    except NoActiveWorker:
        worker = None

    def apply() -> None:
        if worker is not None and worker.is_cancelled:
            return
        try:
            callback(*args, **kwargs)
        except Exception as error:
            target.post_message(WorkFailed(worker.description if worker is not None else "showing the result", error))

    target.call_later(apply)


def failure_note(what: str, error: BaseException) -> str:
    """One plain line: what failed and why."""
    why = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    line = " ".join(f"{what} failed: {why}".split())
    return line if len(line) <= NOTE_CHARS else line[: NOTE_CHARS - 1] + "…"
