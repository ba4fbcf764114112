"""Alias kept for users: ``python -m stad.demo_pipeline`` runs the application `stad.apps.demo_pipeline`."""
import sys

from stad.apps.demo_pipeline import main

if __name__ == "__main__":
    sys.exit(main())
