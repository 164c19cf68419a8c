"""``xconv run`` with the transform replaced by a no-op: what the engine itself costs.

Same command line as ``python -m consumer run --config FILE``. The first event is
transformed for real (so the conversion is one the sandbox accepts); every later event
gets that same prepared conversion, so the consumer's CPU per event is the engine's
own work: fetching, tracking offsets, batching, sending, committing. A benchmark
helper, never used by the service.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from consumer import cli
from consumer.delivery import engine as engine_module
from consumer.transform import Conversion, Transformer

if TYPE_CHECKING:  # names an older tree may lack (bench/engine_ab.py runs this file on it)
    from consumer.transform import Rejection, Skip


class NoopTransformer(Transformer):
    """Transforms one event, then hands out the same conversion for every message."""

    _prepared: Conversion | None = None

    def transform(self, raw: bytes) -> Conversion | Rejection | Skip:
        prepared = self._prepared
        if prepared is not None:
            return prepared
        result = super().transform(raw)
        if isinstance(result, Conversion):
            self._prepared = result
        return result


def main() -> int:
    engine_module.Transformer = NoopTransformer  # type: ignore[attr-defined]
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
