"""What every ``python -m nas.<tool>`` shares: bad input ends in one line on stderr, not a traceback."""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from nas.errors import NasError

EXIT_USAGE = 2


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Call ``main``; report :class:`NasError` (and a missing file) as ``error: ...`` and exit 2."""
    try:
        return int(main(argv) or 0)
    except (NasError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
