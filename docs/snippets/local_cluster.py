# local_cluster.py: two `chronik serve` nodes of the example shop on PostgreSQL + NATS, from a
# test or a script (what `chronik cluster up` runs); each node takes a command.
import json
import urllib.request
import uuid
from pathlib import Path

from chronik.testing.local_cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]  # where `examples.shop` lives: chronik's checkout

with LocalCluster(servers=2, base={"app": "examples.shop.app:build_app"}, app_dir=REPO) as c:
    c.wait_ready()
    print("store", c.store_url, "transport", c.transport_url)
    for node in c.nodes.values():
        body = {
            "domain": "customer",
            "aggregate_id": f"via-{node.name}",
            "type": "CreateCustomer",
            "payload": {"name": node.name, "email": f"{node.name}@example.com"},
            "command_id": str(uuid.uuid4()),
        }
        request = urllib.request.Request(
            f"{node.http}/v1/commands",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            events = json.load(answer)["events"]
        print(node.name, node.grpc, events[0]["type"], events[0]["stream"])
