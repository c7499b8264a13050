"""``python -m lift_graph ...`` is the ``lift-graph`` command line."""

from .cli import main

if __name__ == "__main__":
    main()
