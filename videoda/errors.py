"""The project's error types and the stage entry wrapper: a bad input ends with one clear line and exit code 2.

The bottom layer: it imports nothing from the project, so every module can raise these.
"""

import sys


class ParamError(ValueError):
    """A missing or out-of-range parameter; the message names the key."""


class DataError(ValueError):
    """Bad input data; the message names the offending file or key."""


def run_stage(main):
    try:
        main()
    except (ParamError, DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
