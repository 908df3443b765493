import asyncio

import chronik
from chronik.projections import ErrorPolicy, Projection, ProjectionRunner, ReadModel, Table, query

balances = Projection(
    "balances",
    tables=[Table("balances", {"account": str, "balance": int}, primary_key="account")],
    policy=ErrorPolicy(retries=3, then="park"),  # then park the stream's events; others go on
)


@balances.on("account.deposited", "account.withdrawn")
async def apply(event: chronik.RecordedEvent, rm: ReadModel) -> None:
    sign = 1 if event.type == "account.deposited" else -1
    row = await rm.get("balances", account=event.stream.aggregate_id)
    balance = (row["balance"] if row else 0) + sign * event.json()["amount"]
    rm.upsert("balances", account=event.stream.aggregate_id, balance=balance)


async def main() -> None:
    store = chronik.open_store("sqlite:///data/bank.db")
    async with store, ProjectionRunner(store, [balances]) as projections:
        account = chronik.StreamId("account", "a-1")
        await store.append(account, [chronik.EventData("account.deposited", {"amount": 100})])
        last = await store.append(account, [chronik.EventData("account.withdrawn", {"amount": 30})])
        await projections.wait_for(last.position)  # read your writes
        print(await query(store, "balances", "balances"))  # [{'account': 'a-1', 'balance': 70}]


asyncio.run(main())
