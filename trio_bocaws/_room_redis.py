"""Room history and presence in Redis: the keys, and the Lua scripts that keep them.

Each script runs atomically in Redis, which is what makes the guarantees hold across
workers: a message enters the stream and is published in one step (so the order of the
stream is the order of delivery, and a message is never published without an id or kept
without being published), and a dead worker's presence is removed, and its leave announced,
exactly once. Every key of a room carries the room name as a hash tag (``{name}``), so that
a room's keys live on one node of a Redis Cluster.

Keys of the room ``name``:

- ``trio_bocaws.history:{name}``: a stream of the kept messages, fields ``k`` (the kind:
  ``T`` text, ``J`` JSON text, ``B`` bytes) and ``d`` (the data).
- ``trio_bocaws.presence:{name}``: a sorted set of the workers with members, each scored
  by the Redis time (ms) its entries expire at unless it renews them.
- ``trio_bocaws.presence:{name}:w:<worker>``: a hash, key -> connections on that worker.
- ``trio_bocaws.presence:{name}:total``: a hash, key -> connections over every worker.
"""

from __future__ import annotations

HISTORY_PREFIX = "trio_bocaws.history:"

# KEYS[1] stream. ARGV: channel, kind, data, max count or "", max age in ms or "".
# Trimming is exact (no "~"): the bounds are what the docs promise. Ages count from the
# id's own milliseconds, which are Redis' clock.
ADD = """
local id
if ARGV[4] ~= '' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[4], '*', 'k', ARGV[2], 'd', ARGV[3])
else
  id = redis.call('XADD', KEYS[1], '*', 'k', ARGV[2], 'd', ARGV[3])
end
if ARGV[5] ~= '' then
  local ms = tonumber(string.match(id, '^(%d+)'))
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', ms - tonumber(ARGV[5])))
end
redis.call('PUBLISH', ARGV[1], ARGV[2] .. id .. ' ' .. ARGV[3])
return id
"""

# KEYS[1] stream. ARGV: after (an id, exclusive) or "", limit or "", max age in ms or "".
# Returns {oldest kept id or "", last issued id or "", entries, "1" if newest first}.
READ = """
if ARGV[3] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', now - tonumber(ARGV[3])))
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'', '', {}, '0'}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last = ''
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local oldest = ''
if #first > 0 then oldest = first[1][1] end
if ARGV[1] == '' then
  if ARGV[2] ~= '' then
    return {oldest, last, redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[2]), '1'}
  end
  return {oldest, last, redis.call('XRANGE', KEYS[1], '-', '+'), '0'}
end
if ARGV[2] ~= '' then
  return {oldest, last, redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2]), '0'}
end
return {oldest, last, redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+'), '0'}
"""

# KEYS: workers (zset), totals (hash), this worker's hash. ARGV: worker, ttl ms, presence
# channel, prefix of the workers' hashes, then key, count pairs: this worker's whole count.
# First removes the workers whose entries expired (taking their counts off the totals),
# then replaces this worker's counts, then announces every total that changed. Returns the
# totals as key, count pairs.
SYNC = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local order, net, final = {}, {}, {}
local function add(key, delta)
  if delta == 0 then return end
  local n = redis.call('HINCRBY', KEYS[2], key, delta)
  if n <= 0 then
    redis.call('HDEL', KEYS[2], key)
    n = 0
  end
  if net[key] == nil then
    table.insert(order, key)
    net[key] = 0
  end
  net[key] = net[key] + delta
  final[key] = n
end
for _, worker in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local hash = ARGV[4] .. worker
  local fields = redis.call('HGETALL', hash)
  for i = 1, #fields, 2 do add(fields[i], -tonumber(fields[i + 1])) end
  redis.call('DEL', hash)
  redis.call('ZREM', KEYS[1], worker)
end
local old = {}
local fields = redis.call('HGETALL', KEYS[3])
for i = 1, #fields, 2 do old[fields[i]] = tonumber(fields[i + 1]) end
redis.call('DEL', KEYS[3])
local mine = {}
for i = 5, #ARGV, 2 do
  local key, count = ARGV[i], tonumber(ARGV[i + 1])
  mine[key] = true
  add(key, count - (old[key] or 0))
  redis.call('HSET', KEYS[3], key, count)
end
for key, count in pairs(old) do
  if not mine[key] then add(key, -count) end
end
if #ARGV >= 5 then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[3], ttl * 10)
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
-- Leftovers of a room whose every worker died go away once nobody renews them.
redis.call('PEXPIRE', KEYS[1], ttl * 10)
redis.call('PEXPIRE', KEYS[2], ttl * 10)
for _, key in ipairs(order) do
  if net[key] ~= 0 then
    -- "t": a text message, as the hubs' readers expect.
    redis.call('PUBLISH', ARGV[3], 't' .. cjson.encode(
      {key = key, connections = final[key], joined = net[key] > 0}))
  end
end
return redis.call('HGETALL', KEYS[2])
"""


def history_key(room: str) -> str:
    return f"{HISTORY_PREFIX}{{{room}}}"


def presence_keys(room: str, worker: str) -> tuple[str, str, str, str]:
    """The workers set, the totals, this worker's hash, and the prefix of workers' hashes."""
    base = f"trio_bocaws.presence:{{{room}}}"
    return base, f"{base}:total", f"{base}:w:{worker}", f"{base}:w:"
