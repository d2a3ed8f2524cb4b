"""The Lua scripts: every step that must not be seen half done.

Redis runs a script atomically, so no other client sees a message moved
from the delay set but not yet on the stream, or acknowledged but not yet
deleted. Each script touches the keys of one queue (or one topic's
subscription queues), which share a hash tag, so it also runs unchanged on
Redis Cluster. Times come from the server's clock (``TIME``), so workers
with skewed clocks agree on when a delayed message is due.
"""

from __future__ import annotations

from courier_redis.connection import Script

__all__ = [
    "ACK",
    "DELAY",
    "FORGET",
    "KEEP",
    "PROMOTE",
    "PUBLISH",
    "RECLAIM",
    "REJECT",
    "REMOVE",
    "RENEW",
    "RETRY",
    "SEND",
    "SWEEP",
]

_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Undo wire.member(): a 16-byte nonce, then <len>:<bytes> per field. A
# member courier did not write becomes an entry whose body is the member and
# which has no type: an invalid message, kept rather than stuck or lost.
_SPLIT = """
local function split(m)
  local out, pos, n = {}, 17, #m
  while pos <= n do
    local colon = string.find(m, ':', pos, true)
    if not colon then return nil end
    local len = tonumber(string.sub(m, pos, colon - 1))
    if not len or len < 0 or colon + len > n then return nil end
    out[#out + 1] = string.sub(m, colon + 1, colon + len)
    pos = colon + 1 + len
  end
  if #out == 0 or #out % 2 == 1 then return nil end
  return out
end
local function fields_of(m)
  return split(m) or {'body', m, 'courier-delay-error', 'not a courier delayed message'}
end
"""

#: KEYS: delay set, stream. ARGV: most to move. Moves what is due; returns
#: {moved, ms until the next one is due or -1}. A member is removed by the
#: script that moves it, so two workers racing never move one twice.
PROMOTE = Script(
    "promote",
    _NOW
    + _SPLIT
    + """
local now = now_ms()
local due = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', unpack(fields_of(m)))
  redis.call('ZREM', KEYS[1], m)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if #first == 2 then wait = math.max(0, tonumber(first[2]) - now) end
return {#due, wait}
""",
)

#: KEYS: stream. ARGV: for each message, its number of fields, then the
#: fields. One XADD each; returns per message "" (added) or Redis's error.
#: One command, one reply: a batch costs a round trip and almost no parsing.
SEND = Script(
    "send",
    """
local out, i = {}, 1
while i <= #ARGV do
  local count = tonumber(ARGV[i])
  local added = redis.pcall('XADD', KEYS[1], '*', unpack(ARGV, i + 1, i + count))
  if type(added) == 'table' and added.err then
    out[#out + 1] = added.err
  else
    out[#out + 1] = ''
  end
  i = i + count + 1
end
return out
""",
)

#: KEYS: delay sets. ARGV: pairs of (delay in ms, member), added to each set.
DELAY = Script(
    "delay",
    _NOW
    + """
local now = now_ms()
for _, key in ipairs(KEYS) do
  for i = 1, #ARGV, 2 do
    redis.call('ZADD', key, now + tonumber(ARGV[i]), ARGV[i + 1])
  end
end
return #ARGV / 2
""",
)

#: KEYS: stream. ARGV: group, ids. Acknowledged and deleted at once: a
#: stream never keeps what was handled, and never loses what was not.
ACK = Script(
    "ack",
    """
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
""",
)

#: KEYS: stream. ARGV: group, consumer, idle ms to set, ids. For each id this
#: consumer still holds, set its idle time (0: renewed, so no one reclaims
#: it; huge: released, so the next reclaim takes it) without counting a
#: delivery (JUSTID). One another worker reclaimed meanwhile is left alone.
#: Returns {ids kept, ids another consumer holds now}; an id in neither was
#: acknowledged already.
RENEW = Script(
    "renew",
    """
local kept, taken = {}, {}
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 then
    if p[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
      kept[#kept + 1] = ARGV[i]
    else
      taken[#taken + 1] = ARGV[i]
    end
  end
end
return {kept, taken}
""",
)

#: KEYS: stream. ARGV: group, consumer, least idle ms, most to claim.
#: Finds the oldest entry pending longer than the lease, whoever holds it
#: (XPENDING IDLE, a scan in Redis), and XAUTOCLAIMs from there: claimed
#: with its delivery counted, oldest first; entries deleted while pending
#: leave the pending list on the way. Returns {{{id, deliveries, fields}...},
#: 1 if more idle entries wait, else 0}.
RECLAIM = Script(
    "reclaim",
    """
local oldest = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', 1)
if #oldest == 0 then return {{}, 0} end
local found = redis.call(
  'XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], oldest[1][1], 'COUNT', ARGV[4])
local out = {}
for _, entry in ipairs(found[2]) do
  if entry[2] then
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
    out[#out + 1] = {entry[1], pending[1][4], entry[2]}
  end
end
return {out, #redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', 1)}
""",
)

#: KEYS: stream. ARGV: group, least idle ms, own consumer. Deletes consumers
#: that hold nothing and did nothing for a while (dead workers' names);
#: atomic, so a consumer never loses an entry it just read.
SWEEP = Script(
    "sweep",
    """
local gone = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['pending'] == 0 and info['idle'] >= tonumber(ARGV[2]) and info['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    gone = gone + 1
  end
end
return gone
""",
)

#: KEYS: stream. ARGV: group, consumer. Deletes the consumer if it holds nothing.
FORGET = Script(
    "forget",
    """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
""",
)

#: KEYS: stream, delay set. ARGV: group, old id, delay ms, member of the new
#: attempt. The new attempt is stored and the old entry gone, in one step.
RETRY = Script(
    "retry",
    _NOW
    + _SPLIT
    + """
local delay = tonumber(ARGV[3])
if delay > 0 then
  redis.call('ZADD', KEYS[2], now_ms() + delay, ARGV[4])
else
  redis.call('XADD', KEYS[1], '*', unpack(fields_of(ARGV[4])))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])
""",
)

#: KEYS: stream, dead stream. ARGV: group, id, reason header, reason. The
#: entry, as it was, with the reason, moves to the dead stream.
REJECT = Script(
    "reject",
    """
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e == 1 then
  local f = e[1][2]
  f[#f + 1] = ARGV[3]
  f[#f + 1] = ARGV[4]
  redis.call('XADD', KEYS[2], '*', unpack(f))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return #e
""",
)

#: KEYS: the topic's subscription set. ARGV: stream key prefix, delay-set
#: key prefix, delay ms, member, subscriptions named by the caller. One copy
#: for each subscription named or recorded by ``setup``, all or none. The
#: subscription queues' keys are built here from the prefixes: they share
#: the topic's hash tag, so they are in the slot of KEYS[1].
PUBLISH = Script(
    "publish",
    _NOW
    + _SPLIT
    + """
local names, seen = {}, {}
for i = 5, #ARGV do
  if not seen[ARGV[i]] then seen[ARGV[i]] = true; names[#names + 1] = ARGV[i] end
end
for _, s in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not seen[s] then seen[s] = true; names[#names + 1] = s end
end
local delay = tonumber(ARGV[3])
if delay > 0 then
  local due = now_ms() + delay
  for _, s in ipairs(names) do redis.call('ZADD', ARGV[2] .. s, due, ARGV[4]) end
else
  local fields = fields_of(ARGV[4])
  for _, s in ipairs(names) do redis.call('XADD', ARGV[1] .. s, '*', unpack(fields)) end
end
return #names
""",
)

#: KEYS: stream, index of kept records. ARGV: envelope id, kept header,
#: member. Replaces the record ``keep`` wrote for this id (or adds one) and
#: counts the writes in the kept header: {count, entry id}.
KEEP = Script(
    "keep",
    _SPLIT
    + """
local count = 1
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  local e = redis.call('XRANGE', KEYS[1], old, old)
  if #e == 1 then
    local f, previous = e[1][2], 1
    for i = 1, #f, 2 do
      if f[i] == ARGV[2] then previous = tonumber(f[i + 1]) or 1 end
    end
    count = previous + 1
    redis.call('XDEL', KEYS[1], old)
  end
end
local fields = fields_of(ARGV[3])
fields[#fields + 1] = ARGV[2]
fields[#fields + 1] = tostring(count)
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
redis.call('HSET', KEYS[2], ARGV[1], id)
return {count, id}
""",
)

#: KEYS: stream, index of kept records. ARGV: envelope id, entry id, id
#: header, group. Deletes the entry if it still holds that envelope id.
REMOVE = Script(
    "remove",
    """
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e == 0 then return 0 end
local f, match = e[1][2], false
for i = 1, #f, 2 do
  if f[i] == ARGV[3] and f[i + 1] == ARGV[1] then match = true end
end
if not match then return 0 end
redis.pcall('XACK', KEYS[1], ARGV[4], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[2], ARGV[1]) end
return 1
""",
)
