"""Alias kept for users: ``python -m stad.report_demo`` runs the application `stad.apps.report_demo`."""
import sys

from stad.apps.report_demo import main

if __name__ == "__main__":
    sys.exit(main())
