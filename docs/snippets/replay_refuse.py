import asyncio

import chronik
from chronik.projections import Projection, ProjectionAdmin, ProjectionRunner, ReadModel

sent: list[str] = []
# Its handler has an effect outside chronik (a mail), which a replay would repeat.
mailer = Projection("welcome_mail", replay="refuse")


@mailer.on("member.joined")
def send_mail(event: chronik.RecordedEvent, rm: ReadModel) -> None:
    sent.append(event.json()["email"])  # stands for a call to a mail service


async def main() -> None:
    store = chronik.open_store("memory://")
    async with store, ProjectionRunner(store, [mailer]) as runner:
        joined = chronik.EventData("member.joined", {"email": "ada@example.com"})
        result = await store.append(chronik.StreamId("member", "m-1"), [joined])
        await runner.wait_for(result.position)
        try:
            await ProjectionAdmin(store).request("welcome_mail", "rebuild")  # as the CLI does
        except chronik.ReplayRefused as err:
            print("refused:", err)
        print("mails sent:", sent)


asyncio.run(main())
