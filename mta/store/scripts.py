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

# KEYS lease, due, pending, outbox, outbox_due, poked (one shard); ARGV token,
# outbox_due_ms, nf, finals..., nw, (id, due_ms)..., then (entry, payload) pairs. Commits only
# if every final is still ours; otherwise changes nothing and returns the finals whose lease was
# lost. A waiting message whose receipt was pushed while it was leased (it is in ``poked``) is
# due at once.
FINISH = """
local token = tonumber(ARGV[1])
local nf = tonumber(ARGV[3])
local lost = {}
local poked = redis.call('SCARD', KEYS[6]) > 0
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
  if poked then redis.call('SREM', KEYS[6], unpack(finals)) end
end
local base = 4 + nf
local nw = tonumber(ARGV[base])
if nw > 0 then
  local now = 0
  if poked then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  local waits = {}
  for j = 0, nw - 1 do waits[#waits + 1] = ARGV[base + 1 + 2 * j] end
  local scores = redis.call('ZMSCORE', KEYS[1], unpack(waits))
  local again, mine = {}, {}
  for j, s in ipairs(scores) do
    if s and tonumber(s) == token then
      local at = ARGV[base + 2 + 2 * (j - 1)]
      if poked and redis.call('SREM', KEYS[6], waits[j]) == 1 then at = now end
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
for k = base + 1 + 2 * nw, #ARGV, 2 do
  redis.call('HSET', KEYS[4], ARGV[k], ARGV[k + 1])
  redis.call('ZADD', KEYS[5], ARGV[2], ARGV[k])
end
return {}
"""

# KEYS[1] the partner index of an account in one shard; ARGV[1] the prefix of that shard's
# receipt keys of the account, then (partner id, message id) pairs. Records where each partner
# id's message is, and returns the message ids whose receipt was pushed already (the partner was
# faster than our write): the caller makes them due at once (POKE, in the messages' shard).
PIDX_ADD = """
local found = {}
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  if redis.call('EXISTS', ARGV[1] .. ARGV[i]) == 1 then found[#found + 1] = ARGV[i + 1] end
end
return found
"""

# KEYS due, lease, poked (one shard); ARGV message ids whose receipt was just pushed. A due
# message is due now; a leased one is marked in ``poked`` (its reporter's commit makes it due
# now); any other (final already, or unknown) is left alone.
POKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'LT', now, ARGV[i])
  elseif redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    redis.call('SADD', KEYS[3], ARGV[i])
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


# KEYS[1] the account's receipt index (under the prefix's tag); ARGV[1] ttl (s), ARGV[2] cap,
# then partner ids. For partners whose receipts are capped (unsigned webhooks): drops expired
# index entries (their keys expired with them), then admits each partner id not indexed yet
# while the account holds fewer than cap; returns {refused, admitted partner ids...}. An id
# already indexed is neither (its receipt is stored: the first final wins).
ADMIT_RECEIPTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZCARD', KEYS[1])
local expiry = now + tonumber(ARGV[1]) * 1000
local out = {0}
for i = 3, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    if live >= cap then
      out[1] = out[1] + 1
    else
      redis.call('ZADD', KEYS[1], expiry, ARGV[i])
      live = live + 1
      out[#out + 1] = ARGV[i]
    end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return out
"""

# KEYS receipt keys (one shard); ARGV[1] ttl (s), ARGV[2] the account's partner index (same
# shard), then per receipt its partner id and packed result. Stores each receipt whose key is
# free; returns {stored, message ids of the stored receipts found in the partner index...}: the
# caller makes those due now (POKE), so a reporter publishes their finals at once.
PUSH_RECEIPTS = """
local ttl = tonumber(ARGV[1])
local out = {0}
for i = 1, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[2 * i + 2], 'EX', ttl, 'NX') then
    out[1] = out[1] + 1
    local mid = redis.call('HGET', ARGV[2], ARGV[2 * i + 1])
    if mid then out[#out + 1] = mid end
  end
end
return out
"""
