"""The write script: one unit of work, checked then written, in one server-side call.

Redis runs one script at a time and does not roll a script back, so the script does every
check first (checkpoint fences, ``expect`` s, DCB conditions, duplicates and expectations of
the appends, read-model tables and columns, the types of the table keys, leases) and only
then writes; the writes cannot fail once the checks passed (the keys they touch were read,
so hold the right type). A failed check returns ``{kind, index, ...}`` and writes nothing;
success returns ``{'ok', now_us, first_sequence, first_position, ...}`` (one pair per
append, ``-1`` for an append resolved as a retry). Positions come from ``INCR {prefix}:seq``
inside the script: the global order is commit order.

Arguments after the prefix (see ``chronik.store.redis.write.unit_args``): the store's token
(the payload of the change notification), then counted sections: expects (stream key, kind,
version, event ids), conditions (event ids, after, items of (types, tags)), checkpoints
(field, epoch, value), snapshots (stream key, sequence, record), table writes (op, table,
then ``cols, pk, spec`` for ensure, column/cell pairs for upsert and delete), leases (op,
name, partition, owner, ttl_us, version) and appends (stream key, domain, kind, version,
skip, events of (id, type, tags, body)). ``kind`` is ``any``, ``no``, ``exists`` or ``v``.
"""

from __future__ import annotations

from typing import Final

from chronik.store.redis.lua_read import COMMON

__all__ = ["WRITE"]

WRITE: Final = (
    COMMON
    + r"""
local K_SID, K_CP, K_SNAP = P .. ':stream_seq', P .. ':checkpoints', P .. ':snapshots'
local K_TABLES, K_TCOLS, K_TPK = P .. ':tables', P .. ':table_columns', P .. ':table_keys'
local function rows(t) return P .. ':t:' .. t end
local token = nxt()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nows = num(now)

local expects, conds, cps, snaps, tws, leases, reqs = {}, {}, {}, {}, {}, {}, {}
for i = 1, tonumber(nxt()) do
  expects[i] = {sk = nxt(), kind = nxt(), ver = tonumber(nxt()), ids = nlist()}
end
for i = 1, tonumber(nxt()) do
  local c = {ids = nlist(), after = opt(nxt()), items = {}}
  for j = 1, tonumber(nxt()) do c.items[j] = {types = nlist(), tags = nlist()} end
  conds[i] = c
end
for i = 1, tonumber(nxt()) do cps[i] = {field = nxt(), epoch = tonumber(nxt()), value = nxt()} end
for i = 1, tonumber(nxt()) do snaps[i] = {sk = nxt(), seq = tonumber(nxt()), rec = nxt()} end
for i = 1, tonumber(nxt()) do
  local w = {op = nxt(), table = nxt()}
  if w.op == 'ensure' then
    w.cols, w.pk, w.spec = nxt(), nxt(), nxt()
  elseif w.op == 'upsert' or w.op == 'delete' then
    w.names, w.cells = {}, {}
    for j = 1, tonumber(nxt()) do w.names[j] = nxt(); w.cells[j] = nxt() end
  end
  tws[i] = w
end
for i = 1, tonumber(nxt()) do
  leases[i] = {op = nxt(), name = nxt(), part = nxt(), owner = nxt(), ttl = tonumber(nxt()),
               version = nxt()}
end
for i = 1, tonumber(nxt()) do
  local r = {sk = nxt(), domain = nxt(), kind = nxt(), ver = tonumber(nxt()), skip = nxt() == '1',
             events = {}}
  for j = 1, tonumber(nxt()) do
    r.events[j] = {id = nxt(), type = nxt(), tags = nlist(), body = nxt()}
  end
  reqs[i] = r
end

local function version(sk) return redis.call('LLEN', skey(sk)) - 1 end  -- -1: no stream
local function meets(kind, ver, actual)
  if kind == 'any' then return true end
  if kind == 'no' then return actual < 0 end
  if kind == 'exists' then return actual >= 0 end
  return actual == ver
end
local function stored(id) return redis.call('HEXISTS', K_IDS, id) == 1 end
local function is_retry(ids)
  if #ids == 0 then return false end
  for i = 1, #ids do if not stored(ids[i]) then return false end end
  return true
end
local function row_key(cells)
  local parts = {}
  for i = 1, #cells do parts[i] = #cells[i] .. ':' .. cells[i] end
  return table.concat(parts)
end
local function words(s)
  local out = {}
  for w in string.gmatch(s, '%S+') do out[#out + 1] = w end
  return out
end

-- 1. checks: nothing is written before every one has passed
for i, cp in ipairs(cps) do
  local old = redis.call('HGET', K_CP, cp.field)
  if old then
    local epoch = tonumber(words(old)[3])
    if epoch > cp.epoch then return {'fenced', i, num(epoch)} end
  end
end
for i, x in ipairs(expects) do
  if not is_retry(x.ids) then
    local actual = version(x.sk)
    if not meets(x.kind, x.ver, actual) then return {'expect', i, actual} end
  end
end
for i, c in ipairs(conds) do
  if not is_retry(c.ids) then
    local best, which = nil, nil
    for j, it in ipairs(c.items) do
      -- a later item counts only with an earlier event: bound it by the best so far
      local found = merge(item_positions(it.types, it.tags, c.after, best, false, 1), false, 1)
      if found[1] then best, which = found[1], j end
    end
    if best then return {'condition', i, which, best} end
  end
end
local versions = {}
for i, r in ipairs(reqs) do
  if not r.skip then
    for _, e in ipairs(r.events) do
      if stored(e.id) then return {'dup', i} end
    end
    local actual = versions[r.sk]
    if actual == nil then actual = version(r.sk) end
    if not meets(r.kind, r.ver, actual) then return {'append', i, actual} end
    versions[r.sk] = actual + #r.events
  end
end
local tcols, tpk = {}, {}
local function columns(name)
  if tcols[name] == nil then
    local kind = redis.call('TYPE', rows(name))['ok']
    if kind ~= 'hash' and kind ~= 'none' then
      error('the key of table ' .. name .. ' is a ' .. kind)
    end
    tcols[name] = redis.call('HGET', K_TCOLS, name) or false
    tpk[name] = redis.call('HGET', K_TPK, name) or false
  end
  return tcols[name]
end
for i, w in ipairs(tws) do
  local cols = columns(w.table)
  if w.op == 'ensure' then
    if not cols then tcols[w.table], tpk[w.table] = w.cols, w.pk end
  elseif w.op == 'drop' then
    tcols[w.table], tpk[w.table] = false, false
  elseif not cols then
    return {'table', i, 'missing'}
  elseif w.op ~= 'clear' then
    local unknown = {'table', i, 'columns'}
    local cells = {}
    for j, name in ipairs(w.names) do
      if not string.find(cols, ' ' .. name .. ' ', 1, true) then unknown[#unknown + 1] = name end
      cells[name] = w.cells[j]
    end
    if #unknown > 3 then return unknown end
    local key = {}
    for _, name in ipairs(words(tpk[w.table])) do key[#key + 1] = cells[name] or 'n' end
    w.rk, w.all = row_key(key), words(cols)
  end
end
local LEASES = rows('chronik_leases')
for i, l in ipairs(leases) do
  l.rk = row_key({'s' .. l.name, 'i' .. l.part})
  local held = redis.call('HMGET', LEASES, 'owner\0' .. l.rk, 'expires_at\0' .. l.rk)
  l.owner_cell = 's' .. l.owner
  if l.op == 'acquire' and held[1] and held[1] ~= l.owner_cell
     and tonumber(string.sub(held[2], 2)) >= now then
    return {'lease', i}
  end
end

-- 2. writes: every check passed
local out = {'ok', nows}
for _, r in ipairs(reqs) do
  if r.skip then
    out[#out + 1] = '-1'; out[#out + 1] = '-1'
  else
    local key = skey(r.sk)
    local n = redis.call('LLEN', key)
    if n == 0 then
      local sid = redis.call('INCR', K_SID)
      redis.call('ZADD', K_STREAMS, sid, r.sk)
      redis.call('ZADD', K_STREAMS .. ':' .. r.domain, sid, r.sk)
    end
    out[#out + 1] = num(n)
    for j, e in ipairs(r.events) do
      local pos = redis.call('INCR', K_SEQ)
      local ps = num(pos)
      if j == 1 then out[#out + 1] = ps end
      redis.call('HSET', K_EV, ps, num(n + j - 1) .. ' ' .. nows .. ' ' .. e.body)
      redis.call('RPUSH', key, ps)
      redis.call('HSET', K_IDS, e.id, ps)
      redis.call('ZADD', typekey(e.type), pos, ps)
      redis.call('ZADD', domkey(r.domain), pos, ps)
      for _, tag in ipairs(e.tags) do redis.call('ZADD', tagkey(tag), pos, ps) end
    end
  end
end
for _, cp in ipairs(cps) do redis.call('HSET', K_CP, cp.field, cp.value .. ' ' .. nows) end
for _, s in ipairs(snaps) do
  local old = redis.call('HGET', K_SNAP, s.sk)
  if (not old) or tonumber(string.match(old, '^(%d+) ')) <= s.seq then
    redis.call('HSET', K_SNAP, s.sk, s.rec)
  end
end
for _, w in ipairs(tws) do
  local key = rows(w.table)
  if w.op == 'ensure' then
    if redis.call('HSETNX', K_TCOLS, w.table, w.cols) == 1 then
      redis.call('HSET', K_TPK, w.table, w.pk)
      redis.call('HSET', K_TABLES, w.table, w.spec)
    end
  elseif w.op == 'drop' then
    redis.call('DEL', key)
    redis.call('HDEL', K_TCOLS, w.table)
    redis.call('HDEL', K_TPK, w.table)
    redis.call('HDEL', K_TABLES, w.table)
  elseif w.op == 'clear' then
    redis.call('DEL', key)
  elseif w.op == 'upsert' then
    for j, name in ipairs(w.names) do redis.call('HSET', key, name .. '\0' .. w.rk, w.cells[j]) end
  else
    for _, name in ipairs(w.all) do redis.call('HDEL', key, name .. '\0' .. w.rk) end
  end
end
for _, l in ipairs(leases) do
  local f = function(c) return c .. '\0' .. l.rk end
  local held = redis.call('HMGET', LEASES, f('owner'), f('epoch'))
  if l.op == 'release' then
    if held[1] == l.owner_cell then redis.call('HSET', LEASES, f('expires_at'), 'i0') end
  else
    local epoch = 1
    if held[1] then
      epoch = tonumber(string.sub(held[2], 2))
      if held[1] ~= l.owner_cell then epoch = epoch + 1 end
    end
    redis.call('HSET', LEASES, f('name'), 's' .. l.name, f('partition'), 'i' .. l.part,
      f('owner'), l.owner_cell, f('epoch'), 'i' .. num(epoch),
      f('expires_at'), 'i' .. num(now + l.ttl), f('version'), 'i' .. l.version)
  end
end
if #reqs > 0 then redis.call('PUBLISH', P .. ':changes', token) end
return out
"""
)
