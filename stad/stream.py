"""Alias kept for users: ``python -m stad.stream`` runs the application `stad.apps.stream`."""
import sys

from stad.apps.stream import main

if __name__ == "__main__":
    sys.exit(main())
