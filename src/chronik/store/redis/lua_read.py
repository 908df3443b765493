"""The Lua the Redis store runs on the server: the helpers every script shares, and the reads.

Each script takes the store's key prefix as ``ARGV[1]`` and its arguments after it, read in
order by ``nxt()`` / ``nlist()`` (a count, then that many values). Positions travel as decimal
strings; bounds are exclusive (``lo`` / ``hi``, nil for none). Reads come back as one flat
list ``{position, record, position, record, ...}``, one round trip per page.
"""

from __future__ import annotations

from typing import Final

__all__ = ["COMMON", "GET_EVENTS", "LIST_STREAMS", "READ_ALL", "READ_QUERY", "READ_STREAM"]

#: Keys, the argument reader, index scans and query items: prepended to every script.
COMMON: Final = r"""
local P = ARGV[1]
local argi = 1
local function nxt() argi = argi + 1; return ARGV[argi] end
local function nlist()
  local t = {}
  for i = 1, tonumber(nxt()) do t[i] = nxt() end
  return t
end
local function opt(v) if v == '' then return nil end; return v end
local K_SEQ, K_EV, K_IDS = P .. ':seq', P .. ':events', P .. ':ids'
local K_STREAMS = P .. ':streams'
local function num(n) return string.format('%.0f', n) end
local function skey(sk) return P .. ':s:' .. sk end
local function typekey(t) return P .. ':type:' .. t end
local function domkey(d) return P .. ':dom:' .. d end
local function tagkey(t) return P .. ':tag:' .. t end

-- up to limit members of the position index key within (lo, hi) that pred accepts
local function scan(key, lo, hi, back, limit, pred)
  local out = {}
  if limit <= 0 then return out end
  local min, max = '-inf', '+inf'
  if lo then min = '(' .. lo end
  if hi then max = '(' .. hi end
  local chunk = limit
  if pred then chunk = math.max(limit, 128) end
  while true do
    local r
    if back then
      r = redis.call('ZREVRANGEBYSCORE', key, max, min, 'LIMIT', 0, chunk)
    else
      r = redis.call('ZRANGEBYSCORE', key, min, max, 'LIMIT', 0, chunk)
    end
    for i = 1, #r do
      if (not pred) or pred(r[i]) then
        out[#out + 1] = r[i]
        if #out >= limit then return out end
      end
    end
    if #r < chunk then return out end
    if back then max = '(' .. r[#r] else min = '(' .. r[#r] end
  end
end

-- positions of the whole log within (lo, hi): the write script numbers events without gaps
local function range(lo, hi, back, limit)
  local a = 1
  if lo then a = tonumber(lo) + 1 end
  local b = tonumber(redis.call('GET', K_SEQ) or '0')
  if hi and tonumber(hi) - 1 < b then b = tonumber(hi) - 1 end
  local out = {}
  if back then
    for p = b, a, -1 do
      if #out >= limit then break end
      out[#out + 1] = num(p)
    end
  else
    for p = a, b do
      if #out >= limit then break end
      out[#out + 1] = num(p)
    end
  end
  return out
end

local function in_any(keyfn, names, m)
  for i = 1, #names do
    if redis.call('ZSCORE', keyfn(names[i]), m) then return true end
  end
  return false
end

-- positions of up to limit events with one of types (any if none) and all of tags
local function item_positions(types, tags, lo, hi, back, limit)
  if #tags > 0 then
    local min, max = '-inf', '+inf'
    if lo then min = '(' .. lo end
    if hi then max = '(' .. hi end
    local lead, fewest = 1, nil
    for i = 1, #tags do
      local n = redis.call('ZCOUNT', tagkey(tags[i]), min, max)
      if fewest == nil or n < fewest then lead, fewest = i, n end
    end
    if fewest == 0 then return {} end
    local pred = nil
    if #tags > 1 or #types > 0 then
      pred = function(m)
        for i = 1, #tags do
          if i ~= lead and not redis.call('ZSCORE', tagkey(tags[i]), m) then return false end
        end
        return #types == 0 or in_any(typekey, types, m)
      end
    end
    return scan(tagkey(tags[lead]), lo, hi, back, limit, pred)
  end
  if #types > 0 then
    local out = {}
    for i = 1, #types do
      local r = scan(typekey(types[i]), lo, hi, back, limit, nil)
      for j = 1, #r do out[#out + 1] = r[j] end
    end
    return out
  end
  return range(lo, hi, back, limit)
end

-- the first limit of several sources' positions, in order, without repeats
local function merge(found, back, limit)
  local nums = {}
  for i = 1, #found do nums[i] = tonumber(found[i]) end
  if back then table.sort(nums, function(a, b) return a > b end) else table.sort(nums) end
  local out, last = {}, nil
  for i = 1, #nums do
    if #out >= limit then break end
    if nums[i] ~= last then out[#out + 1] = num(nums[i]); last = nums[i] end
  end
  return out
end

local function records(positions)
  local out = {}
  for s = 1, #positions, 1000 do
    local chunk = {}
    for i = s, math.min(s + 999, #positions) do chunk[#chunk + 1] = positions[i] end
    local recs = redis.call('HMGET', K_EV, unpack(chunk))
    for i = 1, #chunk do
      if recs[i] then out[#out + 1] = chunk[i]; out[#out + 1] = recs[i] end
    end
  end
  return out
end
"""

#: lo, hi, back, limit, types, domains: a page of the global order, filtered.
READ_ALL: Final = (
    COMMON
    + r"""
local lo, hi, back, limit = opt(nxt()), opt(nxt()), nxt() == '1', tonumber(nxt())
local types, domains = nlist(), nlist()
if #types == 0 and #domains == 0 then return records(range(lo, hi, back, limit)) end
local lead, keyfn, pred = types, typekey, nil
if #types == 0 then lead, keyfn = domains, domkey
elseif #domains > 0 then pred = function(m) return in_any(domkey, domains, m) end end
local found = {}
for i = 1, #lead do
  local r = scan(keyfn(lead[i]), lo, hi, back, limit, pred)
  for j = 1, #r do found[#found + 1] = r[j] end
end
return records(merge(found, back, limit))
"""
)

#: lo, hi, back, limit, items (each: types, tags): a page of a DCB query.
READ_QUERY: Final = (
    COMMON
    + r"""
local lo, hi, back, limit = opt(nxt()), opt(nxt()), nxt() == '1', tonumber(nxt())
local found = {}
for _ = 1, tonumber(nxt()) do
  local types, tags = nlist(), nlist()
  local r = item_positions(types, tags, lo, hi, back, limit)
  for j = 1, #r do found[#found + 1] = r[j] end
end
return records(merge(found, back, limit))
"""
)

#: stream key, from sequence ('' for the start / end), back, limit: a page of one stream.
READ_STREAM: Final = (
    COMMON
    + r"""
local key, from, back, limit = skey(nxt()), opt(nxt()), nxt() == '1', tonumber(nxt())
local positions
if back then
  local last = redis.call('LLEN', key) - 1
  if from and tonumber(from) < last then last = tonumber(from) end
  local first = math.max(0, last - limit + 1)
  if last < 0 then return {} end
  positions = redis.call('LRANGE', key, first, last)
  local rev = {}
  for i = #positions, 1, -1 do rev[#rev + 1] = positions[i] end
  positions = rev
else
  local first = tonumber(from or '0')
  positions = redis.call('LRANGE', key, first, first + limit - 1)
end
return records(positions)
"""
)

#: event ids: {position, record} of each stored one ('' and '' for a missing one).
GET_EVENTS: Final = (
    COMMON
    + r"""
local out = {}
for _, id in ipairs(nlist()) do
  local p = redis.call('HGET', K_IDS, id)
  if p then
    out[#out + 1] = p
    out[#out + 1] = redis.call('HGET', K_EV, p)
  else
    out[#out + 1] = ''
    out[#out + 1] = ''
  end
end
return out
"""
)

#: domain ('' for all), aggregate id prefix, cursor, limit: {id, stream key, length, ...}.
LIST_STREAMS: Final = (
    COMMON
    + r"""
local domain, prefix, cursor, limit = opt(nxt()), nxt(), nxt(), tonumber(nxt())
local key = K_STREAMS
if domain then key = K_STREAMS .. ':' .. domain end
local min, out, n = '(' .. cursor, {}, 0
while n < limit do
  local r = redis.call('ZRANGEBYSCORE', key, min, '+inf', 'WITHSCORES', 'LIMIT', 0, 256)
  for i = 1, #r, 2 do
    local sk = r[i]
    local agg = string.sub(sk, string.find(sk, '/', string.find(sk, '/', 1, true) + 1, true) + 1)
    if prefix == '' or string.sub(agg, 1, #prefix) == prefix then
      out[#out + 1] = r[i + 1]
      out[#out + 1] = sk
      out[#out + 1] = redis.call('LLEN', skey(sk))
      n = n + 1
      if n >= limit then return out end
    end
  end
  if #r < 512 then return out end
  min = '(' .. r[#r]
end
return out
"""
)
