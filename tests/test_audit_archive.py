"""Time travel: the documents of an earlier transaction, reproduced byte for byte from Kafka.

A real broker, the real gateway and the four sandboxes on real sockets; the relay publishes the
outbox; `blauweknop audit reproduce` reads the topic, decrypts with the archivist's key and
verifies every signature. Tampering is done on a copy of the topic in a second real broker.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from connectors._sandbox import CITIZENS
from gateway.audit import EVENTS_TOPIC
from gateway.audit.archive import write_key_pair
from gateway.audit.broker import EmbeddedBroker, start_broker
from gateway.audit.kafka import client_options
from gateway.audit.stream import StreamRecord, read_topic
from gateway.canonical import canonicalize
from gateway.cli import main
from gateway.jws import b64url_decode
from gateway.pki import DevPki
from tests.conftest import Stack, start_stack

EVERYWHERE = "999990020"  # Citlali Bakker: data at all four organisations
MANY_DEBTS = "999990032"
LONG_HISTORY = "999990068"  # more than 500 events


@dataclass(frozen=True)
class Issued:
    transactie_id: str
    body: bytes
    formaat: str


@dataclass
class World:
    broker: EmbeddedBroker
    stack: Stack
    state_dir: Path
    issued: list[Issued]

    @property
    def archivist_key(self) -> Path:
        return self.state_dir / "archivist" / "archivist-DEVELOPMENT-ONLY.key"


FORMATS = {"json": "application/json", "jws": "application/jose"}
FORMATS |= {"pdf": "application/pdf", "xml": "application/xml"}


async def _download(stack: Stack, bsn: str, formaat: str = "json") -> Issued:
    headers = {"Accept": FORMATS[formaat]}
    async with stack.session.post(
        f"{stack.url}/v1/sandbox/bundel", json={"bsn": bsn}, headers=headers
    ) as response:
        assert response.status == 200, await response.text()
        return Issued(response.headers["X-Transactie-Id"], await response.read(), formaat)


async def topic(broker: EmbeddedBroker, name: str = EVENTS_TOPIC) -> list[StreamRecord]:
    async with contextlib.aclosing(read_topic(broker.kafka_config(), name)) as records:
        return [r async for r in records]


async def _published(broker: EmbeddedBroker, transactions: set[str], within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        seen = {
            r.key.decode() for r in await topic(broker) if r.key and b"bundel.uitgegeven" in r.value
        }
        if transactions <= seen:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the relay did not publish {transactions - seen} within {within} s")


@pytest.fixture
async def world(broker: EmbeddedBroker, state_dir: Path, pki: DevPki) -> AsyncIterator[World]:
    stack, runners = await start_stack(
        state_dir, pki, kafka={"bootstrap_servers": broker.bootstrap, "idempotence": False}
    )
    try:
        issued = [
            await _download(stack, EVERYWHERE),
            await _download(stack, MANY_DEBTS, "jws"),
            await _download(stack, EVERYWHERE, "pdf"),
            await _download(stack, MANY_DEBTS, "xml"),
            *[await _download(stack, c.bsn) for c in CITIZENS],
        ]
        await _published(broker, {i.transactie_id for i in issued}, within=30)
        yield World(broker, stack, state_dir, issued)
    finally:
        await stack.session.close()
        for runner in runners:
            await runner.cleanup()


async def blauweknop(
    args: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    """Run the real command line in a worker thread (it runs its own event loop)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(args)

    code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()


def _env(world: World, broker: EmbeddedBroker | None = None) -> dict[str, str]:
    return {
        "BLAUWEKNOP_STATE_DIR": str(world.state_dir),
        "BLAUWEKNOP_KAFKA__BOOTSTRAP_SERVERS": (broker or world.broker).bootstrap,
        "BLAUWEKNOP_KAFKA__IDEMPOTENCE": "false",
        # The sandboxes of this test run on ports of their own.
        **{
            f"BLAUWEKNOP_ORGANISATIONS__{o.connector.upper()}__URL": o.settings.base_url
            for o in world.stack.settings.organisations
        },
    }


async def test_reproduce_gives_the_issued_bytes_with_verified_signatures(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The auditor holds the organisations' signing certificates, but none of the gateway's
    # credentials for reaching them: no UWV client key, no CAK client secret.
    missing = str(tmp_path / "not-given")
    auditor = {
        "BLAUWEKNOP_ORGANISATIONS__UWV__CLIENT_CERT": missing,
        "BLAUWEKNOP_ORGANISATIONS__UWV__CLIENT_KEY": missing,
        "BLAUWEKNOP_ORGANISATIONS__CAK__OPTIONS__CLIENT_SECRET_FILE": missing,
    }
    # Earlier transactions, in every format: many others were issued after them.
    runs = [(world.issued[0], _env(world)), (world.issued[1], _env(world) | auditor)]
    runs += [(issued, _env(world)) for issued in world.issued[2:4]]
    assert {issued.formaat for issued, _ in runs} == {"json", "jws", "pdf", "xml"}
    for earlier, env in runs:
        out_dir = tmp_path / earlier.transactie_id
        code, out, err = await blauweknop(
            [
                "audit",
                "reproduce",
                earlier.transactie_id,
                "--key",
                str(world.archivist_key),
                "-o",
                str(out_dir),
            ],
            env,
            monkeypatch,
        )
        assert code == 0, err
        files = list(out_dir.iterdir())
        assert len(files) == 1
        assert files[0].suffix == f".{earlier.formaat}"
        assert files[0].read_bytes() == earlier.body, "byte for byte as issued"
        assert "seal " in out
        for code_name in ("duo", "uwv", "cak", "gm0363"):
            assert f"{code_name} verified" in out, out


async def test_no_plaintext_document_on_kafka(world: World) -> None:
    records = await topic(world.broker)
    everything = b"\n".join([r.value for r in records] + [r.key or b"" for r in records])
    # The text of every event without its ciphertexts (random base64 may hold any short word),
    # and the ciphertexts decoded, searched separately.
    stripped, ciphertexts = [], []
    for record in records:
        event = orjson.loads(record.value)
        data = event["data"]
        for field in ("enc", "ciphertext"):
            if field in data:
                ciphertexts.append(base64.b64decode(data.pop(field)))
        stripped.append(orjson.dumps(event))
    text = b"\n".join(stripped)
    assert len(ciphertexts) >= 2 * len(world.issued), "enc and ciphertext per document"
    for issued in world.issued:
        for haystack in (everything, *ciphertexts):
            assert issued.body not in haystack
        if issued.formaat == "json":
            bundel = orjson.loads(issued.body)["bundel"]
            assert canonicalize(bundel) not in everything
            # Nor any organisation's raw signed response, nor its base64 in the bundle.
            for bron in bundel["bronnen"]:
                if bron["herkomst"]:
                    assert bron["herkomst"]["inhoud"][:64].encode() not in everything
                    raw = base64.b64decode(bron["herkomst"]["inhoud"])
                    assert raw[:200] not in everything
    for citizen in CITIZENS:
        for haystack in (everything, *ciphertexts):
            assert citizen.bsn.encode() not in haystack
            assert citizen.naam.encode() not in haystack
        for part in citizen.naam.split():
            if len(part) > 3:
                assert part.encode() not in text, part


async def test_a_wrong_key_fails_clearly(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_key_pair(tmp_path / "wrong.key", tmp_path / "wrong.pub")
    tx = world.issued[0].transactie_id
    code, _, err = await blauweknop(
        ["audit", "reproduce", tx, "--key", str(tmp_path / "wrong.key"), "-o", str(tmp_path)],
        _env(world),
        monkeypatch,
    )
    assert code == 1
    assert "was encrypted to archivist key" in err
    assert "use the archivist key that was configured at the time" in err
    assert not _documents(tmp_path), "nothing written"


async def test_an_unknown_transaction_fails_clearly(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = await blauweknop(
        [
            "audit",
            "reproduce",
            "00000000-0000-4000-8000-000000000000",
            "--key",
            str(world.archivist_key),
            "-o",
            str(tmp_path),
        ],
        _env(world),
        monkeypatch,
    )
    assert code == 1
    assert "no events of transaction 00000000-0000-4000-8000-000000000000" in err


def _data(record: StreamRecord) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(record.value)["data"]
    return data


def _with_data(record: StreamRecord, change: Callable[[dict[str, Any]], None]) -> bytes:
    event = orjson.loads(record.value)
    change(event["data"])
    return orjson.dumps(event)


def _flip_a_byte(data: dict[str, Any]) -> None:
    ciphertext = bytearray(base64.b64decode(data["ciphertext"]))
    ciphertext[len(ciphertext) // 2] ^= 0x01
    data["ciphertext"] = base64.b64encode(bytes(ciphertext)).decode()


@contextlib.asynccontextmanager
async def _tampered_copy(
    records: list[StreamRecord], changed: dict[int, bytes]
) -> AsyncIterator[EmbeddedBroker]:
    """A second real broker holding the topic with some values replaced."""
    copy = await start_broker()
    try:
        producer = AIOKafkaProducer(
            **client_options(copy.kafka_config()), acks="all", max_request_size=16 * 1024 * 1024
        )
        await producer.start()
        try:
            for r in records:
                value = changed.get(r.offset, r.value)
                await producer.send_and_wait(
                    EVENTS_TOPIC, value, key=r.key, timestamp_ms=r.timestamp_ms
                )
        finally:
            await producer.stop()
        yield copy
    finally:
        await copy.stop()


@pytest.mark.parametrize("tampering", ["flipped ciphertext byte", "swapped ciphertexts"])
async def test_tampered_ciphertexts_fail(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tampering: str
) -> None:
    records = await topic(world.broker)
    a, b = world.issued[4], world.issued[5]  # two JSON downloads
    archived = {r.key.decode(): r for r in records if r.key and b"document.gearchiveerd" in r.value}
    target, other = archived[a.transactie_id], archived[b.transactie_id]
    if tampering == "flipped ciphertext byte":
        changed = {target.offset: _with_data(target, _flip_a_byte)}
    else:
        # The other event's ciphertext, with its size and hash, as a forger would have to.
        moved = {k: _data(other)[k] for k in ("enc", "ciphertext", "grootte", "sha256")}
        changed = {target.offset: _with_data(target, lambda d: d.update(moved))}
    async with _tampered_copy(records, changed) as copy:
        code, _, err = await blauweknop(
            [
                "audit",
                "reproduce",
                a.transactie_id,
                "--key",
                str(world.archivist_key),
                "-o",
                str(tmp_path),
            ],
            _env(world, copy),
            monkeypatch,
        )
        assert code == 1
        assert "does not decrypt" in err, err
        assert "altered, moved from another event" in err
        # The untouched transaction still reproduces from the same copy.
        code, _, err = await blauweknop(
            [
                "audit",
                "reproduce",
                b.transactie_id,
                "--key",
                str(world.archivist_key),
                "-o",
                str(tmp_path / "b"),
            ],
            _env(world, copy),
            monkeypatch,
        )
        assert code == 0, err
        assert next((tmp_path / "b").iterdir()).read_bytes() == b.body
    assert not _documents(tmp_path)


async def test_the_archive_sink_reproduces_too(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "archive"
    env = _env(world)
    code, out, err = await blauweknop(
        ["audit", "archive", "--dir", str(archive), "--once"], env, monkeypatch
    )
    assert code == 0, err
    assert "archived" in out
    # Kafka forgets (retention; here: the broker stops) — the archive still reproduces.
    await world.broker.stop()
    earlier = world.issued[0]
    code, out, err = await blauweknop(
        [
            "audit",
            "reproduce",
            earlier.transactie_id,
            "--key",
            str(world.archivist_key),
            "--archive",
            str(archive),
            "-o",
            str(tmp_path / "out"),
        ],
        env,
        monkeypatch,
    )
    assert code == 0, err
    assert next((tmp_path / "out").iterdir()).read_bytes() == earlier.body
    # An archive with a record removed is refused before anything is decrypted.
    day_file = sorted(archive.glob("audit-*"))[-1]
    lines = day_file.read_bytes().splitlines(keepends=True)
    target = next(
        i
        for i, line in enumerate(lines)
        if b"document.gearchiveerd" in base64.b64decode(orjson.loads(line).get("value", ""))
    )
    day_file.write_bytes(b"".join(lines[:target] + lines[target + 1 :]))
    code, _, err = await blauweknop(
        [
            "audit",
            "reproduce",
            earlier.transactie_id,
            "--key",
            str(world.archivist_key),
            "--archive",
            str(archive),
            "-o",
            str(tmp_path / "again"),
        ],
        env,
        monkeypatch,
    )
    assert code == 1
    assert "the archive does not verify" in err, err
    assert "records missing" in err, err


def _documents(folder: Path) -> list[Path]:
    return list(folder.glob("blauwe-knop-*"))


async def test_time_travel_across_a_seal_key_rotation_and_an_archivist_key_rotation(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issued under the old seal key and the old archivist key; reproduced after both rotated."""
    state = tmp_path / "state"
    pki = DevPki(state / "pki")
    await asyncio.to_thread(pki.ensure)
    kafka = {"bootstrap_servers": broker.bootstrap, "idempotence": False}
    old_archivist = state / "archivist" / "archivist-DEVELOPMENT-ONLY.key"

    stack, runners = await start_stack(state, pki, kafka=kafka)
    try:
        before = await _download(stack, EVERYWHERE)
    finally:
        await stack.session.close()
        for runner in runners:
            await runner.cleanup()
    # Both keys rotate: a new seal key signs, a new archivist key receives new documents.
    await asyncio.to_thread(pki.rotate_seal)
    write_key_pair(tmp_path / "new-archivist.key", tmp_path / "new-archivist.pub")
    stack, runners = await start_stack(
        state,
        pki,
        kafka=kafka,
        audit={"archive_public_key_file": str(tmp_path / "new-archivist.pub")},
    )
    try:
        after = await _download(stack, EVERYWHERE)
        await _published(broker, {before.transactie_id, after.transactie_id}, within=30)
        world = World(broker, stack, state, [before, after])
        env = _env(world)
    finally:
        await stack.session.close()
        for runner in runners:
            await runner.cleanup()

    async def reproduce(tx: str, key: Path, out: Path) -> tuple[int, str, str]:
        return await blauweknop(
            ["audit", "reproduce", tx, "--key", str(key), "-o", str(out)], env, monkeypatch
        )

    code, out, err = await reproduce(before.transactie_id, old_archivist, tmp_path / "before")
    assert code == 0, err
    assert next((tmp_path / "before").iterdir()).read_bytes() == before.body
    code, out2, err = await reproduce(
        after.transactie_id, tmp_path / "new-archivist.key", tmp_path / "after"
    )
    assert code == 0, err
    assert next((tmp_path / "after").iterdir()).read_bytes() == after.body
    # Each under its own seal key: the retired one still verifies the old bundle.
    protected = orjson.loads(before.body)["jws"].split(".")[0]
    seal_before = orjson.loads(b64url_decode(protected))["kid"]
    assert f"seal {seal_before} verified" in out
    assert f"seal {seal_before} verified" not in out2
    # The old archivist key does not open the new document, and says which key would.
    code, _, err = await reproduce(after.transactie_id, old_archivist, tmp_path / "x")
    assert code == 1
    assert "was encrypted to archivist key" in err


async def test_a_document_too_large_for_kafka_is_not_released(
    broker: EmbeddedBroker, state_dir: Path, pki: DevPki
) -> None:
    """An event Kafka would refuse would stop the relay: the gateway refuses that document."""
    kafka = {
        "bootstrap_servers": broker.bootstrap,
        "idempotence": False,
        "max_message_bytes": 65536,
    }
    stack, runners = await start_stack(state_dir, pki, kafka=kafka)
    try:
        # Text is archived compressed and fits in 64 KiB; a PDF (~120 KB) is not compressible.
        async with stack.session.post(
            f"{stack.url}/v1/sandbox/bundel",
            json={"bsn": LONG_HISTORY},
            headers={"Accept": "application/pdf"},
        ) as response:
            assert response.status == 500
            assert response.content_type == "application/problem+json"
            body = await response.read()
            refused = response.headers["X-Transactie-Id"]
        assert b"financiele_zaken" not in body
        assert LONG_HISTORY.encode() not in body
        small = await _download(stack, "999990007")  # Anna de Vries: no data anywhere
        await _published(broker, {small.transactie_id}, within=30)
    finally:
        await stack.session.close()
        for runner in runners:
            await runner.cleanup()
    assert refused.encode() not in {r.key for r in await topic(broker)}, "no evidence of it"


async def test_the_seal_is_checked_against_the_jwks_the_auditor_gives(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world.stack.session.get(f"{world.stack.url}/.well-known/jwks.json") as response:
        jwks = await response.read()
    published, stranger = tmp_path / "jwks.json", tmp_path / "stranger.json"
    published.write_bytes(jwks)
    stranger.write_bytes(orjson.dumps({"keys": []}))
    earlier = world.issued[0]

    async def reproduce(jwks_file: Path, out: Path) -> tuple[int, str, str]:
        args = ["audit", "reproduce", earlier.transactie_id, "--key", str(world.archivist_key)]
        return await blauweknop(
            [*args, "--jwks", str(jwks_file), "-o", str(out)], _env(world), monkeypatch
        )

    code, _, err = await reproduce(published, tmp_path / "ok")
    assert code == 0, err
    code, _, err = await reproduce(stranger, tmp_path / "no")
    assert code == 1
    assert "signatures do not verify" in err
    assert "not one of the trusted seal keys" in err
