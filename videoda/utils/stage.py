"""Entry point wrapper for the stage scripts: a bad input ends with one clear line and exit code 2."""

import sys

from videoda.data.clips import DataError
from videoda.params import ParamError


def run_stage(main):
    try:
        main()
    except (ParamError, DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
