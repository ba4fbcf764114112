"""Alias kept for users: ``python -m stad.export`` runs the application `stad.apps.export`."""
import sys

from stad.apps.export import main

if __name__ == "__main__":
    sys.exit(main())
