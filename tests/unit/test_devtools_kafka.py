"""The dev broker's launcher: pure helpers that must never make a start fail by chance."""

from __future__ import annotations

import base64

from devtools.kafka import new_cluster_id


def test_cluster_ids_never_start_with_a_dash() -> None:
    # kafka-storage reads "--cluster-id -x..." as a missing argument: 1 start in 64 failed.
    ids = [new_cluster_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)
    for text in ids[:50]:
        assert len(text) == 22
        assert len(base64.urlsafe_b64decode(text + "==")) == 16
