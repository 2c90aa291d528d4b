"""The project's error types and the stage entry wrapper: a bad input ends with one clear line and exit code 2.

The bottom layer: it imports nothing from the project, so every module can raise these.
"""

import sys


class ParamError(ValueError):
    """A missing or out-of-range parameter; the message names the key."""


class DataError(ValueError):
    """Bad input data; the message names the offending file or key."""


def run_stage(main):
    """Run a stage's ``main``; a bad input (the errors below) ends it with one ``error: ...`` line and exit code 2.

    Other exceptions (a bug, an OSError while writing) keep their traceback: the readers of input files turn
    their own OSErrors into a DataError naming the file, so nothing is caught here by its type alone.
    """
    try:
        main()
    except (ParamError, DataError, FileNotFoundError, ValueError) as e:
        print("error: " + " ".join(line.strip() for line in str(e).splitlines() if line.strip()), file=sys.stderr)
        sys.exit(2)
