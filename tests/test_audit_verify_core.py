"""The verification core without Kafka: how differences between topic and checkpoints are named.

The end-to-end tests (test_audit_verify.py) run the same code over a real broker; these cover
the combinations that would be slow to stage there: several edits at once, edits at the ends.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections.abc import Callable

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.audit._internal.merkle import MerkleTree, leaf_hash
from gateway.audit.checkpoint import Checkpoint, CheckpointRecord, NoteSigner
from gateway.audit.verify import LogVerifier
from gateway.pki import DevPki
from gateway.tsa import TsaTrust
from gateway.tsa.server import DevTsa

ORIGIN = "o.example/log"


def events(n: int) -> list[bytes]:
    return [orjson.dumps({"id": str(uuid.uuid4()), "n": i}) for i in range(n)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[NoteSigner, DevTsa, TsaTrust]:
    pki = DevPki(tmp_path_factory.mktemp("core") / "pki")
    pki.ensure()
    signer = NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
    return signer, DevTsa.from_pki(pki), TsaTrust.from_files(pki.root_cert)


def checkpoint_records(
    values: list[bytes],
    sizes: list[int],
    signer: NoteSigner,
    tsa: DevTsa,
    times: list[dt.datetime] | None = None,
) -> list[bytes]:
    """Records as the checkpointer makes them; the time-stamp from the TSA's own signer."""
    from gateway.tsa.client import timestamp_request

    tree = MerkleTree(leaf_hash(v) for v in values)
    records, previous = [], 0
    for i, size in enumerate(sizes):
        text = Checkpoint(ORIGIN, size, tree.root(size)).text()
        request, _ = timestamp_request(text.encode())
        stamp = tsa.respond(request, now=times[i] if times else None)
        records.append(
            CheckpointRecord(
                signer.sign(text), stamp, previous, tree.leaf_hashes(previous, size)
            ).to_json()
        )
        previous = size
    return records


def check(
    world: tuple[NoteSigner, DevTsa, TsaTrust],
    values: list[bytes],
    edit: Callable[[list[bytes]], list[bytes]],
    sizes: list[int],
) -> set[tuple[str, int | None]]:
    signer, tsa, trust = world
    core = LogVerifier(ORIGIN, signer.verifier, trust)
    for offset, record in enumerate(checkpoint_records(values, sizes, signer, tsa)):
        core.add_checkpoint(offset, record)
    for offset, value in enumerate(edit(list(values))):
        core.add_event(offset, value)
    return {(f.kind, f.offset) for f in core.finish().problems}


def test_untouched_log_passes(world: tuple[NoteSigner, DevTsa, TsaTrust]) -> None:
    assert check(world, events(50), lambda v: v, [20, 50]) == set()


def test_several_edits_far_apart_are_each_named(
    world: tuple[NoteSigner, DevTsa, TsaTrust],
) -> None:
    values = events(60)

    def edit(v: list[bytes]) -> list[bytes]:
        v[3] = v[3].replace(b'"n":3', b'"n":33')
        v[40] = v[40].replace(b'"n":40', b'"n":44')
        return v

    assert check(world, values, edit, [30, 60]) == {("altered", 3), ("altered", 40)}


def test_edits_at_the_ends(world: tuple[NoteSigner, DevTsa, TsaTrust]) -> None:
    values = events(20)
    assert check(world, values, lambda v: v[1:], [20]) == {("removed", 0)}
    assert check(world, values, lambda v: v[:-1], [20]) == {("removed", None)}
    assert check(world, values, lambda v: [v[5], *v], [20]) == {("duplicated", 0)}
    # Missing at the end of the covered range is a problem; extra at the end is only new.
    assert check(world, values, lambda v: [*v, *events(2)], [20]) == set()


def test_moved_event_and_foreign_insert(world: tuple[NoteSigner, DevTsa, TsaTrust]) -> None:
    values = events(30)

    def move(v: list[bytes]) -> list[bytes]:
        moved = v.pop(4)
        v.insert(20, moved)
        return v

    found = check(world, values, move, [30])
    assert ("reordered", 20) in found or ("reordered", 4) in found
    assert all(kind == "reordered" for kind, _ in found)

    foreign = orjson.dumps({"id": "forged", "n": -1})
    assert check(world, values, lambda v: [*v[:9], foreign, *v[9:]], [30]) == {("inserted", 9)}


def test_checkpoint_whose_leaf_hashes_do_not_match_its_root(
    world: tuple[NoteSigner, DevTsa, TsaTrust],
) -> None:
    signer, tsa, trust = world
    values = events(10)
    record = CheckpointRecord.parse(checkpoint_records(values, [10], signer, tsa)[0])
    swapped = CheckpointRecord(
        record.note,
        record.timestamp,
        0,
        record.leaf_hashes[32:64] + record.leaf_hashes[:32] + record.leaf_hashes[64:],
    )
    core = LogVerifier(ORIGIN, signer.verifier, trust)
    core.add_checkpoint(0, swapped.to_json())
    assert [f.kind for f in core.findings] == ["leaf-hashes"]
    assert core.published.size == 0


def test_one_insert_at_the_start_of_a_long_log_is_named_quickly(
    world: tuple[NoteSigner, DevTsa, TsaTrust],
) -> None:
    values = events(60_000)
    foreign = orjson.dumps({"id": "forged", "n": -1})
    started = time.perf_counter()
    found = check(world, values, lambda v: [foreign, *v, *events(3)], [30_000, 60_000])
    assert found == {("inserted", 0)}
    assert time.perf_counter() - started < 20


def test_a_shuffled_or_replaced_log_is_reported_without_endless_work(
    world: tuple[NoteSigner, DevTsa, TsaTrust],
) -> None:
    values = events(3000)

    def shuffle(v: list[bytes]) -> list[bytes]:
        random.Random(7).shuffle(v)
        return v

    started = time.perf_counter()
    found = check(world, values, shuffle, [3000])
    assert {kind for kind, _ in found} <= {"reordered", "more"}
    assert ("more", None) in found
    assert time.perf_counter() - started < 20

    many = events(60_000)
    found = check(world, many, lambda v: events(60_000), [60_000])
    assert found == {("rewritten", 0)}


def test_a_back_dated_checkpoint_is_a_problem(world: tuple[NoteSigner, DevTsa, TsaTrust]) -> None:
    signer, tsa, trust = world
    values = events(30)
    now = dt.datetime.now(dt.UTC)
    in_order = checkpoint_records(values, [10, 20, 30], signer, tsa, [now, now, now])
    back_dated = checkpoint_records(
        values, [10, 20, 30], signer, tsa, [now, now - dt.timedelta(minutes=3), now]
    )
    for records, expected in ((in_order, []), (back_dated, ["time-order"])):
        core = LogVerifier(ORIGIN, signer.verifier, trust)
        for offset, record in enumerate(records):
            core.add_checkpoint(offset, record)
        assert [f.kind for f in core.findings] == expected
        assert core.published.size == 30
