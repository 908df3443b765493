"""The Redis event store (``redis://host:port/db?prefix=chronik``): store (the adapter,
assembling the rest), options (the URL, the durability check), write (a unit of work as the
write script's arguments, its answer as results or typed errors), lua_write / lua_read (the
scripts the server runs), scripts (EVALSHA, loading a script the server does not know), read
and tables (pages in one round trip), codec (the key layout and record formats), feed
(pub/sub between processes) and errors (the one place the driver's errors are translated).
Data flows down: store -> write/read/tables -> scripts -> the server.

**Atomicity and order.** Every unit of work is one call of one Lua script (EVALSHA). Redis
runs scripts one at a time, so the script checks every expectation, append condition, fence
and lease against the store as it is, then writes everything, or writes nothing and says which
check failed. The global position is taken inside the script (``INCR``), so position order is
commit order: an event is visible exactly when every event before it is, and no reader can skip
one, whatever the number of concurrent writers and processes. Redis does not roll a script back,
so the script does all its checks (keys of the wrong type included) before its first write.

**Durability** is the server's AOF setting; the store checks it at open (``CONFIG GET``) and
logs a warning when AOF is off (``?require_aof=true`` refuses instead; ``?appendfsync=always``
or ``everysec`` refuses a server with a weaker fsync policy). With ``appendonly yes``:

* ``appendfsync always``: the server fsyncs the AOF before it answers a write, so every
  acknowledged append survives a kill -9 of redis-server and a power loss;
* ``appendfsync everysec``: a kill -9 of redis-server alone loses nothing acknowledged (the
  operating system has the data), a power loss or kernel crash may lose about the last second.

Without AOF a restart loses everything since the last RDB save. Replicas are asynchronous: a
failover may lose acknowledged writes whatever the fsync policy.

**Limits.** All keys of one store live under ``{prefix}:`` on one server: Redis Cluster is not
supported (the scripts touch keys of many hash slots). Read-model tables are hashes read whole
(see ``tables``): fine for chronik's own tables and small read models.

Imports: chronik.errors, chronik.messages, chronik.dcb, chronik.adapters, chronik.store.base/
records/tables/table_query/system_tables, msgspec and the ``redis`` package (redis.asyncio);
never chronik.projections, chronik.server or chronik.transports.
"""

from chronik.store.redis.store import RedisEventStore

__all__ = ["RedisEventStore"]
