"""The one exception type for problems a user can cause and fix."""


class LongsepError(Exception):
    """A user-facing error: bad path, bad audio, bad config, missing data.

    The message is one line that names the file or key and says what to do.
    Entry points print it without a traceback (unless ``HYDRA_FULL_ERROR=1``).
    """
