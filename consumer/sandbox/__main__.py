"""``python -m consumer.sandbox``: the ``xconv sandbox`` command without the other commands.

Tests and benchmarks start the sandbox this way so that a broken import in an unrelated
command cannot stop it from starting.
"""

from __future__ import annotations

import argparse

from consumer.commands import sandbox as command


def main() -> int:
    parser = argparse.ArgumentParser(prog="xconv sandbox", description=command.HELP)
    command.add_arguments(parser)
    return command.run(parser.parse_args())


raise SystemExit(main())
