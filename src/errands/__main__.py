"""``python -m errands``: the ``errands`` command.

Example::

    python -m errands --database-url sqlite:///errands.db jobs --state retryable
"""

from errands.cli import main

if __name__ == "__main__":
    main()
