"""The gRPC PersonalData service: forget a subject, verify it is gone, list the forgotten,
redact an event; the same calls as ``chronik.server.http_gdpr`` over HTTP.

Verify and ListForgotten need the read right; Forget and Redact are admin writes (the key's
``admin`` right; without auth refused unless ``grpc.admin_writes``), like the Projections
service's actions; all need an operator's key (tenant ``*``) when the key is tenant-scoped.
The audit events name the API key (``key:<name>``), or without auth the
peer (``grpc:<peer>``).
"""

from __future__ import annotations

from typing import Any

from chronik.errors import ValidationError
from chronik.lifecycle.forget import compact_if_sqlite, forget_subject, sqlite_path
from chronik.lifecycle.redact import redact_event
from chronik.lifecycle.subject_keys import StoreKeyStore
from chronik.lifecycle.subjects import forgotten_subjects, key_ring_for
from chronik.lifecycle.verify import MAX_CANARIES, verify_subject
from chronik.server.grpc_admin import Context, ProjectionsService
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc

__all__ = ["PersonalDataService"]


class PersonalDataService(ProjectionsService, rpc.PersonalDataServicer):
    """PersonalData: Forget, Verify, ListForgotten, Redact (rights as the Projections
    service's: read for reads, admin for writes)."""

    def _who(self, context: Context) -> str:
        key = self._key(context)
        return f"grpc:{context.peer()}" if key is None else f"key:{key.name}"

    async def Forget(self, request: pb.ForgetSubjectRequest, context: Context) -> Any:
        async def call() -> pb.ForgetSubjectResponse:
            self._allow_admin(context)
            who = self._who(context)
            if len(request.reason) > 1024:
                raise ValidationError("reason has more than 1024 characters", field="reason")
            keys = key_ring_for(self.app.store, self.app.registry)
            r = await forget_subject(
                self.app.store, keys, request.subject, by=who, reason=request.reason
            )
            return pb.ForgetSubjectResponse(
                subject=r.subject,
                key_deleted=r.key_deleted,
                by=r.by,
                audit_event_id=r.audit_event_id,
                snapshots_dropped=r.snapshots_dropped,
                dead_letters_scrubbed=r.dead_letters_scrubbed,
            )

        return await self._guarded(context, call)

    async def Verify(self, request: pb.VerifySubjectRequest, context: Context) -> Any:
        async def call() -> pb.VerifySubjectResponse:
            self._allow_read(context, operator=True)
            canaries, tables = list(request.canaries), list(request.tables)
            if len(canaries) > MAX_CANARIES or len(tables) > MAX_CANARIES:
                raise ValidationError(f"at most {MAX_CANARIES} canaries", field="canaries")
            if any(len(c) < 4 for c in canaries):
                raise ValidationError("a canary needs 4 characters or more", field="canaries")
            store = self.app.store
            report = await verify_subject(
                store,
                request.subject,
                canaries=canaries,
                keys=StoreKeyStore(store),
                tables=tables,
                sqlite_file=sqlite_path(store.url),
            )
            return pb.VerifySubjectResponse(
                subject=report.subject,
                clean=report.clean,
                searched=report.searched,
                hits=[pb.VerifyHit(where=h.where, what=h.what) for h in report.hits],
                envelopes=report.envelopes,
            )

        return await self._guarded(context, call)

    async def ListForgotten(self, request: pb.ListForgottenRequest, context: Context) -> Any:
        async def call() -> pb.ListForgottenResponse:
            self._allow_read(context, operator=True)
            if request.limit > 1000:
                raise ValidationError("limit must be at most 1000", field="limit")
            gone = await forgotten_subjects(self.app.store, request.limit or 100)
            return pb.ListForgottenResponse(
                subjects=[
                    pb.ForgottenSubject(subject=s.subject, forgotten_at_us=s.forgotten_at)
                    for s in gone
                ]
            )

        return await self._guarded(context, call)

    async def Redact(self, request: pb.RedactEventRequest, context: Context) -> Any:
        async def call() -> pb.RedactEventResponse:
            self._allow_admin(context)
            who = self._who(context)
            r = await redact_event(self.app.store, request.event_id, by=who, reason=request.reason)
            await compact_if_sqlite(self.app.store.url)
            return pb.RedactEventResponse(
                event_id=r.event_id,
                stream=r.stream,
                sequence=r.sequence,
                type=r.type,
                by=r.by,
                payload_sha256=r.payload_sha256,
                audit_event_id=r.audit_event_id,
                rewritten=r.rewritten,
            )

        return await self._guarded(context, call)
