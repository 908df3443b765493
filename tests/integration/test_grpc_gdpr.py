"""The gRPC PersonalData service: Forget and Redact need the admin right (audited with the
key's name), Verify and ListForgotten the read right; bad input and unknown events are typed."""

from __future__ import annotations

from pathlib import Path

import grpc
import msgspec
import pytest

import chronik
from chronik.lifecycle.subject_keys import StoreKeyStore
from chronik.personal import KeyRing
from chronik.server.auth import ApiKey, Auth
from chronik.server.grpc import GrpcServer
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc

EMAIL = "canary-grpc-1f9a@example.test"
OPS = (("x-api-key", "ops-secret-1"),)
READER = (("x-api-key", "reader-secret-1"),)


class Registered(msgspec.Struct):
    """A registration with a personal email."""

    customer_id: str
    email: str


async def test_personal_data_service(tmp_path: Path) -> None:
    """Reader: verify (hits while the key lives) and list, but Forget is PERMISSION_DENIED;
    ops: forget and redact, both audited as key:ops; then verify is clean; an unknown event
    is NOT_FOUND, a short canary INVALID_ARGUMENT."""
    registry = chronik.EventRegistry()
    registry.register(Registered, "customer.registered", personal={"email": "customer_id"})
    app = chronik.Chronik(f"sqlite:///{tmp_path}/g.db", registry=registry)
    await app.store.open()
    registry.use_keys(KeyRing(StoreKeyStore(app.store)))
    event = Registered("c-g", EMAIL)
    await registry.load_keys([event])
    stream = chronik.StreamId("customer", "c-g")
    await app.store.append(stream, [registry.to_event_data(event)])
    note = chronik.EventData("note.added", {"text": f"call {EMAIL}"})
    await app.store.append(chronik.StreamId("note", "n-g"), [note])
    auth = Auth(
        [
            ApiKey(name="ops", key="ops-secret-1", admin=True),
            ApiKey(name="reader", key="reader-secret-1"),
        ]
    )
    srv = GrpcServer(app, port=0, auth=auth)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = rpc.PersonalDataStub(channel)
            ask = pb.VerifySubjectRequest(subject="c-g", canaries=[EMAIL])
            live = await stub.Verify(ask, metadata=READER)
            assert not live.clean and any("still open" in h.what for h in live.hits)
            assert any(EMAIL in h.what for h in live.hits)  # the note, in clear
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await stub.Forget(pb.ForgetSubjectRequest(subject="c-g"), metadata=READER)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

            done = await stub.Forget(
                pb.ForgetSubjectRequest(subject="c-g", reason="REQ-G"), metadata=OPS
            )
            assert done.key_deleted and done.by == "key:ops"
            listed = await stub.ListForgotten(pb.ListForgottenRequest(), metadata=READER)
            assert [s.subject for s in listed.subjects] == ["c-g"]

            (leak,) = [e async for e in app.store.read_stream(chronik.StreamId("note", "n-g"))]
            red = await stub.Redact(
                pb.RedactEventRequest(event_id=leak.event_id, reason="leak"), metadata=OPS
            )
            assert red.rewritten and red.by == "key:ops" and len(red.payload_sha256) == 64
            clean = await stub.Verify(ask, metadata=READER)
            assert clean.clean and list(clean.hits) == [], clean

            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.Redact(pb.RedactEventRequest(event_id="nope", reason="x"), metadata=OPS)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as short:
                bad = pb.VerifySubjectRequest(subject="c-g", canaries=["ab"])
                await stub.Verify(bad, metadata=READER)
            assert short.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await srv.stop(1)
        await app.store.close()
