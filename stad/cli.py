"""How every command-line entry point ends: bad input is one clear line and exit code 2, never a traceback.

    if __name__ == "__main__":
        sys.exit(run_cli(main))

The errors readers raise for bad input (`FormatError`, `ConfigError`, a missing file, a bad value)
name the file, line and field already; a traceback would only hide that line. ``STAD_DEBUG=1`` in
the environment re-raises them for debugging. No torch import here.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

# ValueError covers FormatError, ConfigError, AcarSchemaError, DatasetValidationError and the
# argument checks of the CLIs; OSError covers missing and unreadable files.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError)
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; an input error prints ``error: <message>`` on stderr and returns 2."""
    try:
        result = main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except INPUT_ERRORS as error:
        if os.environ.get("STAD_DEBUG"):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return result if isinstance(result, int) else 0
