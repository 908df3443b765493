# --8<-- [start:events]
import asyncio

import msgspec

import chronik
from chronik.deadlines import Clock, ManualClock
from chronik.projections import Projection, ReadModel, Table, query
from chronik.sagas import Saga, SagaContext
from chronik.transports import Message, Transport

registry = chronik.EventRegistry()  # the allowlist of event types


@registry.event()  # the event type is the class name: "BookLent"
class BookLent(msgspec.Struct):
    loan_id: str
    member: str


@registry.event()
class BookReturned(msgspec.Struct):
    loan_id: str


@registry.event()
class ReminderSent(msgspec.Struct):
    loan_id: str
    member: str


class Lend(msgspec.Struct):  # a command's payload schema, checked before any logic runs
    loan_id: str
    member: str


class GiveBack(msgspec.Struct):
    pass


class Remind(msgspec.Struct):
    loan_id: str


# --8<-- [end:events]


# --8<-- [start:aggregate]
class Book(chronik.Aggregate):
    domain = "book"
    loan_id: str = ""  # annotated fields with defaults are the state
    member: str = ""

    @chronik.command()  # handles commands of type "Lend" (the payload class's name)
    def lend(self, cmd: Lend) -> None:
        self.require(not self.loan_id, "Book is already lent")
        self.emit(BookLent(cmd.loan_id, cmd.member))

    @chronik.command()
    def give_back(self, cmd: GiveBack) -> None:
        self.require(self.loan_id, "Book is not lent")
        self.emit(BookReturned(self.loan_id))

    @chronik.command()
    def remind(self, cmd: Remind) -> None:
        self.require(self.loan_id == cmd.loan_id, "Loan is closed")
        self.emit(ReminderSent(cmd.loan_id, self.member))

    @chronik.apply  # state changes only here, on load and after each command
    def _lent(self, event: BookLent) -> None:
        self.loan_id, self.member = event.loan_id, event.member

    @chronik.apply
    def _returned(self, event: BookReturned) -> None:
        self.loan_id, self.member = "", ""


# --8<-- [end:aggregate]


# --8<-- [start:projection]
loans = Projection(
    "loans",
    tables=[Table("loans", {"book": str, "member": str}, primary_key="book")],
)


@loans.on("BookLent")
def on_lent(event: chronik.RecordedEvent, rm: ReadModel) -> None:
    rm.upsert("loans", book=event.stream.aggregate_id, member=event.json()["member"])


@loans.on("BookReturned")
def on_returned(event: chronik.RecordedEvent, rm: ReadModel) -> None:
    rm.delete("loans", book=event.stream.aggregate_id)


# --8<-- [end:projection]


# --8<-- [start:saga]
DAY = 24 * 60 * 60


class Loan(msgspec.Struct):  # the saga's state, one instance per loan
    book: str = ""


overdue: Saga[Loan] = Saga("overdue", state=Loan, associate="loan_id")


@overdue.starts_with("BookLent")
def loan_started(state: Loan, event: chronik.RecordedEvent, ctx: SagaContext) -> Loan:
    ctx.schedule("due", after=14 * DAY)  # fires once, 14 days after the event was recorded
    return Loan(book=event.stream.aggregate_id)


@overdue.on("BookReturned")
def loan_closed(state: Loan, event: chronik.RecordedEvent, ctx: SagaContext) -> Loan:
    ctx.cancel("due")
    ctx.end()
    return state


@overdue.on_deadline("due")
def loan_due(state: Loan, event: chronik.RecordedEvent, ctx: SagaContext) -> Loan:
    ctx.send(
        chronik.Command(
            domain="book",
            aggregate_id=state.book,
            type="Remind",
            payload={"loan_id": ctx.instance_id},
        )
    )
    ctx.end()
    return state


# --8<-- [end:saga]


# --8<-- [start:outbox]
def loan_messages(
    event: object, data: chronik.PreparedEvent, stream: chronik.StreamId
) -> Message | None:
    """Tell other services about loans: committed with the events, published afterwards."""
    if not isinstance(event, BookLent):
        return None
    body = {"book": stream.aggregate_id, "member": event.member, "loan_id": event.loan_id}
    return Message(
        topic="library.loans",
        id=data.event_id,
        key=stream.aggregate_id,
        body=msgspec.json.encode(body),
    )


# --8<-- [end:outbox]


# --8<-- [start:app]
def build_app(
    store: str = "sqlite:///data/library.db",
    *,
    clock: Clock | None = None,
    transport: str | Transport | None = None,
) -> chronik.Chronik:
    """The library app; `chronik serve` calls it with the store URL (app: library:build_app)."""
    app = chronik.Chronik(store=store, registry=registry, clock=clock, outbox_transport=transport)
    app.add_aggregate(Book)
    app.add_projection(loans)
    app.add_saga(overdue)  # its deadlines fire by the app's deadline scheduler
    app.add_outbox(loan_messages)
    return app


# --8<-- [end:app]


# --8<-- [start:main]
async def main() -> None:
    clock = ManualClock()  # the tutorial moves time by hand; production uses the wall clock
    async with build_app("memory://", clock=clock) as app:  # runs the projection and saga
        lent = await app.dispatch(
            chronik.Command(
                domain="book",
                aggregate_id="dune",
                type="Lend",
                payload={"loan_id": "loan-1", "member": "ada"},
            )
        )
        print("lent:", [e.type for e in lent.events], "version", lent.version)
        try:
            await app.dispatch(
                chronik.Command(
                    domain="book",
                    aggregate_id="dune",
                    type="Lend",
                    payload={"loan_id": "loan-2", "member": "bo"},
                )
            )
        except chronik.CommandRejected as err:
            print("rejected:", err.reason)
        await app.wait_for(lent.position)  # the projection and the saga have seen the loan
        print("loans:", await query(app.store, "loans", "loans"))

        reminders = app.store.subscribe(types=["ReminderSent"])  # catch up, then live
        clock.advance(15 * DAY)  # the deadline is due: the saga sends Remind
        async with asyncio.timeout(5), reminders:
            async for event in reminders:
                print("reminder:", event.stream, event.json())
                break
        async for event in app.store.read_stream(chronik.StreamId("book", "dune")):
            print(event.sequence, event.type, event.json())


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:main]
