"""The project's error types and the stage entry wrapper: a bad input ends with one clear line and exit code 2.

The bottom layer: it imports nothing from the project, so every module can raise these.
"""

import sys


class ParamError(ValueError):
    """A missing or out-of-range parameter; the message names the key."""


class DataError(ValueError):
    """Bad input data; the message names the offending file or key."""


class Diverged(RuntimeError):
    """A training run whose loss became non-finite or passed ``loss_limit``; the message names the stage, the
    step, the loss term and its value. Not a bad input (the inputs were valid; the run failed): exit code 1."""


class InvariantError(ValueError):
    """A value a library function's contract excludes, met inside a stage (e.g. a NaN confidence where only
    probabilities can be): a fault of an earlier step, not of the stage's input files, so exit code 1. A
    ValueError, as a library caller passing such a value expects."""


class RankFailed(RuntimeError):
    """A rank of a stage run as several processes failed (``videoda.utils.distributed.launch_ranks``); the message
    names it. ``exit_code``: the stage's, 2 when the rank stopped at a bad input, else 1."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


def run_stage(main):
    """Run a stage's ``main``; a bad input (the errors below) ends it with one ``error: ...`` line and exit code 2.

    A diverged training run (``Diverged``) or a broken invariant (``InvariantError``) ends it with one line and
    exit code 1: the input files are not at fault, so "fix the input" (2) would mislead. A failed rank of a stage
    of several processes ends it with one line naming the rank, and the rank's code.
    Other exceptions (a bug, an OSError while writing) keep their traceback: the readers of input files turn
    their own OSErrors into a DataError naming the file, so nothing is caught here by its type alone.
    """
    try:
        main()
    except (Diverged, InvariantError) as e:
        print("error: " + " ".join(line.strip() for line in str(e).splitlines() if line.strip()), file=sys.stderr)
        sys.exit(1)
    except (ParamError, DataError, FileNotFoundError, ValueError) as e:
        print("error: " + " ".join(line.strip() for line in str(e).splitlines() if line.strip()), file=sys.stderr)
        sys.exit(2)
    except RankFailed as e:      # the rank printed its own error or traceback above
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
