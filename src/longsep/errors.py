"""The one exception type for problems a user can cause and fix, and the one way to say an
exception in one line."""


class LongsepError(Exception):
    """A user-facing error: bad path, bad audio, bad config, missing data.

    The message is one line that names the file or key and says what to do.
    Entry points print it without a traceback (unless ``HYDRA_FULL_ERROR=1``).
    """


def one_line(exc: BaseException, limit: int = 500) -> str:
    """``exc`` as one line: the message of a :class:`LongsepError` in its chain (also when a
    library wrapped it, as Hydra's instantiate does), else ``Type: first line``."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, LongsepError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        text = str(cause)
    else:
        first = (str(exc).strip().splitlines() or [""])[0]
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
