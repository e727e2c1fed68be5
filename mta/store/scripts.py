"""Every Lua script of the store, each with the keys and arguments it takes.

Scripts get their keys in KEYS, except where a comment says a key named in ARGV shares the
prefix's hash tag (one Redis Cluster slot). :class:`mta.store.Store` registers and calls them.
"""

# KEYS[1] markers; ARGV[1] ttl, ARGV[2] markers that may be taken over, ARGV[3] the marker to
# set, ARGV[4] 'n' then ARGV[5] = the batch size (every index of a batch), or 'i' then
# ARGV[5..] = indexes. Marks every free index with ARGV[3]; returns, per index, '' (taken) or
# the marker that stops it. A batch never seen before (no markers at all) costs one field:
# '*' = ARGV[3] stands for every index, and the script returns {} ("all yours"). Per-index
# fields override '*'. Lua's unpack takes a few thousand values at most: chunks of 1000.
BEGIN = """
local fields = {}
if ARGV[4] == 'n' then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('HSET', KEYS[1], '*', ARGV[3])
    redis.call('EXPIRE', KEYS[1], ARGV[1])
    return {}
  end
  for i = 0, tonumber(ARGV[5]) - 1 do fields[#fields + 1] = tostring(i) end
else
  for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
end
local star = redis.call('HGET', KEYS[1], '*')
local out, take = {}, {}
local accept = ARGV[2]
for c = 1, #fields, 1000 do
  local part = {}
  for i = c, math.min(c + 999, #fields) do part[#part + 1] = fields[i] end
  local current = redis.call('HMGET', KEYS[1], unpack(part))
  for j, v in ipairs(current) do
    v = v or star
    if (not v) or (accept ~= '' and string.find(accept, v, 1, true)) then
      out[#out + 1] = ''
      take[#take + 1] = part[j]
      take[#take + 1] = ARGV[3]
    else
      out[#out + 1] = v
    end
  end
  if #take >= 1000 then
    redis.call('HSET', KEYS[1], unpack(take))
    take = {}
  end
end
if #take > 0 then redis.call('HSET', KEYS[1], unpack(take)) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return out
"""

# KEYS markers, held, held data; ARGV index, message id, ttl. Cancels a message that has not
# reached a partner (no marker yet: still queued; held; in a retry queue): returns '' when
# cancelled, else the marker that makes it too late ('i' in flight, 'o' done, 'c' already).
CANCEL = """
local v = redis.call('HGET', KEYS[1], ARGV[1]) or redis.call('HGET', KEYS[1], '*')
if v and v ~= 'h' and v ~= 'r' then return v end
redis.call('HSET', KEYS[1], ARGV[1], 'c')
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
return ''
"""

# KEYS due, lease, pending; ARGV now_ms, now_us, token, limit.
# Returns expired leases to due, then moves up to `limit` due ids into the lease set.
CLAIM = """
local limit = tonumber(ARGV[4])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, limit)
if #expired > 0 then
  local back = {}
  for _, id in ipairs(expired) do back[#back + 1] = ARGV[1]; back[#back + 1] = id end
  redis.call('ZADD', KEYS[1], unpack(back))
  redis.call('ZREM', KEYS[2], unpack(expired))
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, limit)
if #ids == 0 then return {{}, {}} end
redis.call('ZREM', KEYS[1], unpack(ids))
local lease = {}
for _, id in ipairs(ids) do lease[#lease + 1] = ARGV[3]; lease[#lease + 1] = id end
redis.call('ZADD', KEYS[2], unpack(lease))
return {ids, redis.call('HMGET', KEYS[3], unpack(ids))}
"""

# KEYS lease, due, pending, outbox, outbox_due; ARGV token, outbox_due_ms, nf, finals...,
# nw, (id, due_ms, receipt key or '')..., np, (partner index key, partner id)..., then
# (entry, payload) pairs. Commits only if every final is still ours; otherwise changes nothing
# and returns the finals whose lease was lost. A waiting message whose receipt was pushed while
# it was leased is due at once (its receipt key exists now). Keys named in ARGV share the
# prefix's hash tag (one slot).
FINISH = """
local token = tonumber(ARGV[1])
local nf = tonumber(ARGV[3])
local lost = {}
if nf > 0 then
  local finals = {}
  for i = 4, 3 + nf do finals[#finals + 1] = ARGV[i] end
  local scores = redis.call('ZMSCORE', KEYS[1], unpack(finals))
  for i, s in ipairs(scores) do
    if (not s) or tonumber(s) ~= token then lost[#lost + 1] = finals[i] end
  end
  if #lost > 0 then return lost end
  redis.call('ZREM', KEYS[1], unpack(finals))
  redis.call('HDEL', KEYS[3], unpack(finals))
end
local base = 4 + nf
local nw = tonumber(ARGV[base])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if nw > 0 then
  local waits = {}
  for j = 0, nw - 1 do waits[#waits + 1] = ARGV[base + 1 + 3 * j] end
  local scores = redis.call('ZMSCORE', KEYS[1], unpack(waits))
  local again, mine = {}, {}
  for j, s in ipairs(scores) do
    if s and tonumber(s) == token then
      local at = ARGV[base + 2 + 3 * (j - 1)]
      local rk = ARGV[base + 3 + 3 * (j - 1)]
      if rk ~= '' and redis.call('EXISTS', rk) == 1 then at = now end
      mine[#mine + 1] = waits[j]
      again[#again + 1] = at
      again[#again + 1] = waits[j]
    end
  end
  if #mine > 0 then
    redis.call('ZREM', KEYS[1], unpack(mine))
    redis.call('ZADD', KEYS[2], unpack(again))
  end
end
local pbase = base + 1 + 3 * nw
local np = tonumber(ARGV[pbase])
for k = pbase + 1, pbase + 2 * np, 2 do
  redis.call('HDEL', ARGV[k], ARGV[k + 1])
end
for k = pbase + 1 + 2 * np, #ARGV, 2 do
  redis.call('HSET', KEYS[4], ARGV[k], ARGV[k + 1])
  redis.call('ZADD', KEYS[5], ARGV[2], ARGV[k])
end
return {}
"""

# KEYS due; ARGV pairs of (message id, receipt key). Run in the worker's MULTI right after its
# pending records: a receipt that was pushed before the record existed makes its message due
# at once (the partner was faster than our write).
DUE_IF_RECEIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #ARGV, 2 do
  if redis.call('EXISTS', ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[1], 'XX', now, ARGV[i])
  end
end
return 0
"""

# KEYS[1] rate key; ARGV now_ms, ms per message, messages, longest wait (ms).
# GCRA-style reservation shared by every worker: returns the ms to wait before sending the
# messages (0 = now), having reserved their slots; or -1 (nothing reserved) when that wait
# would exceed the longest one allowed.
RESERVE = """
local now = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
if wait > tonumber(ARGV[4]) then return -1 end
local new = tat + tonumber(ARGV[2]) * tonumber(ARGV[3])
redis.call('SET', KEYS[1], string.format('%.3f', new), 'PX', math.ceil(new - now) + 1000)
return math.floor(wait)
"""

# KEYS zset, hash; ARGV now_ms, new_score, limit. Takes due members for a lease.
TAKE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
if #ids == 0 then return {{}, {}} end
local again = {}
for _, id in ipairs(ids) do again[#again + 1] = ARGV[2]; again[#again + 1] = id end
redis.call('ZADD', KEYS[1], unpack(again))
return {ids, redis.call('HMGET', KEYS[2], unpack(ids))}
"""

# KEYS lease, due; ARGV token, due_ms, ids... Gives back claims this reporter will not finish.
RELEASE = """
local token = tonumber(ARGV[1])
for i = 3, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) == token then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('ZADD', KEYS[2], ARGV[2], ARGV[i])
  end
end
return 0
"""


# KEYS[1] the account's receipt index, KEYS[2..] receipt keys; ARGV[1] ttl (s), ARGV[2]
# cap (-1 = none), ARGV[3] the account's partner index, ARGV[4] the due index, then per
# receipt its partner id and packed result. Drops expired index entries (their keys expired
# with them), then stores each receipt whose key is free while the account holds fewer than
# cap, and makes the pending message it belongs to (partner index) due now, so a reporter
# publishes its final at once; returns {stored, refused at the cap}. Redis's own clock times
# the key, its index entry and the due time.
PUSH_RECEIPTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZCARD', KEYS[1])
local expiry = now + ttl * 1000
local stored, refused = 0, 0
for i = 2, #KEYS do
  if cap >= 0 and live >= cap then
if redis.call('EXISTS', KEYS[i]) == 0 then refused = refused + 1 end
  elseif redis.call('SET', KEYS[i], ARGV[2 * i + 2], 'EX', ttl, 'NX') then
live = live + redis.call('ZADD', KEYS[1], expiry, ARGV[2 * i + 1])
stored = stored + 1
local mid = redis.call('HGET', ARGV[3], ARGV[2 * i + 1])
if mid then redis.call('ZADD', ARGV[4], 'XX', 'LT', now, mid) end
  end
end
if stored > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return {stored, refused}
"""
