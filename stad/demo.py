"""Alias kept for users: ``python -m stad.demo`` runs the application `stad.apps.demo`."""
import sys

from stad.apps.demo import main

if __name__ == "__main__":
    sys.exit(main())
