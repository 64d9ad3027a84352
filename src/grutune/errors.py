"""User-facing errors: a pipeline script prints them as one message and exits non-zero, without a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class GrutuneError(Exception):
    """An error the user can fix (bad params, bad download, missing input); its message says how."""


class ConfigError(GrutuneError):
    """params.yaml is invalid; the message names the key and what is allowed."""


class DataError(GrutuneError):
    """A download or a data file failed verification or parsing; the message names the file."""


def cli(main: Callable[..., None]) -> Callable[..., None]:
    """Wrap a pipeline script's main(): GrutuneError -> message on stderr, exit 2; Ctrl-C -> exit 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except GrutuneError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
