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

# KEYS (due, lease, pending) of S shards; ARGV now_ms, now_us, token, limit, per-shard limit.
# Per shard: returns expired leases to due, then moves up to the per-shard limit of due ids into
# the lease set; then, while fewer than `limit` were taken, more from any shard. Returns {ids,
# records} (a record is false when the pending entry is gone: an orphan). One call covers all
# shards on a single node (one MULTI-like step), one shard per call on a cluster.
CLAIM = """
local limit, per = tonumber(ARGV[4]), tonumber(ARGV[5])
local all_ids, all_vals = {}, {}
local function take(s, n)
  local due, lease, pending = KEYS[3 * s - 2], KEYS[3 * s - 1], KEYS[3 * s]
  local ids = redis.call('ZRANGEBYSCORE', due, '-inf', ARGV[1], 'LIMIT', 0, n)
  if #ids == 0 then return 0 end
  redis.call('ZREM', due, unpack(ids))
  local held = {}
  for _, id in ipairs(ids) do held[#held + 1] = ARGV[3]; held[#held + 1] = id end
  redis.call('ZADD', lease, unpack(held))
  local vals = redis.call('HMGET', pending, unpack(ids))
  for i, id in ipairs(ids) do
    all_ids[#all_ids + 1] = id
    all_vals[#all_vals + 1] = vals[i]
  end
  return #ids
end
local shards = #KEYS / 3
for s = 1, shards do
  local lease = KEYS[3 * s - 1]
  local expired = redis.call('ZRANGEBYSCORE', lease, '-inf', ARGV[2], 'LIMIT', 0, per)
  if #expired > 0 then
    local back = {}
    for _, id in ipairs(expired) do back[#back + 1] = ARGV[1]; back[#back + 1] = id end
    redis.call('ZADD', KEYS[3 * s - 2], unpack(back))
    redis.call('ZREM', lease, unpack(expired))
  end
end
local full = {}
for s = 1, shards do
  if take(s, math.min(per, limit - #all_ids)) == per then full[#full + 1] = s end
end
for _, s in ipairs(full) do
  if #all_ids >= limit then break end
  take(s, limit - #all_ids)
end
return {all_ids, all_vals}
"""

# KEYS (lease, due, pending, outbox, outbox_due, poked) of S shards; ARGV token, outbox_due_ms,
# then per shard: nf, finals..., nw, (id, due_ms)...; then (shard number 1..S, entry, payload)
# triples. Commits only if every final of every shard is still ours; otherwise changes nothing
# and returns the finals whose lease was lost. A waiting message whose receipt was pushed while
# it was leased (it is in ``poked``) is due at once. One call covers all shards on a single
# node, one shard per call on a cluster.
FINISH = """
local token = tonumber(ARGV[1])
local shards = #KEYS / 6
local lost = {}
local pos = 3
local plan = {}
for s = 1, shards do
  local nf = tonumber(ARGV[pos])
  local finals = {}
  for i = pos + 1, pos + nf do finals[#finals + 1] = ARGV[i] end
  pos = pos + nf + 1
  local nw = tonumber(ARGV[pos])
  plan[s] = {finals, pos, nw}
  pos = pos + 1 + 2 * nw
  if nf > 0 then
    local scores = redis.call('ZMSCORE', KEYS[6 * s - 5], unpack(finals))
    for i, sc in ipairs(scores) do
      if (not sc) or tonumber(sc) ~= token then lost[#lost + 1] = finals[i] end
    end
  end
end
if #lost > 0 then return lost end
local now = nil
for s = 1, shards do
  local lease, due, pending, poked = KEYS[6 * s - 5], KEYS[6 * s - 4], KEYS[6 * s - 3], KEYS[6 * s]
  local finals, wpos, nw = plan[s][1], plan[s][2], plan[s][3]
  local anypoked = redis.call('SCARD', poked) > 0
  if #finals > 0 then
    redis.call('ZREM', lease, unpack(finals))
    redis.call('HDEL', pending, unpack(finals))
    if anypoked then redis.call('SREM', poked, unpack(finals)) end
  end
  if nw > 0 then
    if anypoked and not now then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    local waits = {}
    for j = 0, nw - 1 do waits[#waits + 1] = ARGV[wpos + 1 + 2 * j] end
    local scores = redis.call('ZMSCORE', lease, unpack(waits))
    local again, mine = {}, {}
    for j, sc in ipairs(scores) do
      if sc and tonumber(sc) == token then
        local at = ARGV[wpos + 2 + 2 * (j - 1)]
        if anypoked and redis.call('SREM', poked, waits[j]) == 1 then at = now end
        mine[#mine + 1] = waits[j]
        again[#again + 1] = at
        again[#again + 1] = waits[j]
      end
    end
    if #mine > 0 then
      redis.call('ZREM', lease, unpack(mine))
      redis.call('ZADD', due, unpack(again))
    end
  end
end
for k = pos, #ARGV, 3 do
  local s = tonumber(ARGV[k])
  redis.call('HSET', KEYS[6 * s - 2], ARGV[k + 1], ARGV[k + 2])
  redis.call('ZADD', KEYS[6 * s - 1], ARGV[2], ARGV[k + 1])
end
return {}
"""

# KEYS partner indexes (of an account in a shard), one per group; ARGV per group: the prefix of
# that shard's receipt keys of the account, a count, then that many (partner id, message id)
# pairs. Records where each partner id's message is, and returns the message ids whose receipt
# was pushed already (the partner was faster than our write): the caller makes them due at once
# (POKE, in the messages' shards). One group per call on a cluster (one slot).
PIDX_ADD = """
local found = {}
local pos = 1
for g = 1, #KEYS do
  local prefix, count = ARGV[pos], tonumber(ARGV[pos + 1])
  for i = pos + 2, pos + 2 * count, 2 do
    redis.call('HSET', KEYS[g], ARGV[i], ARGV[i + 1])
    if redis.call('EXISTS', prefix .. ARGV[i]) == 1 then found[#found + 1] = ARGV[i + 1] end
  end
  pos = pos + 2 + 2 * count
end
return found
"""

# KEYS (due, lease, poked) per group (a shard); ARGV per group: a count, then that many message
# ids whose receipt was just pushed. A due message is due now; a leased one is marked in
# ``poked`` (its reporter's commit makes it due now); any other (final already, or unknown) is
# left alone.
POKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pos = 1
for g = 1, #KEYS / 3 do
  local due, lease, poked = KEYS[3 * g - 2], KEYS[3 * g - 1], KEYS[3 * g]
  local count = tonumber(ARGV[pos])
  for i = pos + 1, pos + count do
    if redis.call('ZSCORE', due, ARGV[i]) then
      redis.call('ZADD', due, 'LT', now, ARGV[i])
    elseif redis.call('ZSCORE', lease, ARGV[i]) then
      redis.call('SADD', poked, ARGV[i])
    end
  end
  pos = pos + 1 + count
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

# KEYS receipt keys, group after group; ARGV[1] ttl (s), then per group (a shard): the account's
# partner index there, a count, then that many (partner id, packed result) pairs, in the order
# of the group's keys. Stores each receipt whose key is free; returns {stored, message ids of
# the stored receipts found in the partner index...}: the caller makes those due now (POKE), so
# a reporter publishes their finals at once.
PUSH_RECEIPTS = """
local ttl = tonumber(ARGV[1])
local out = {0}
local pos, k = 2, 1
while pos <= #ARGV do
  local index, count = ARGV[pos], tonumber(ARGV[pos + 1])
  for i = pos + 2, pos + 2 * count, 2 do
    if redis.call('SET', KEYS[k], ARGV[i + 1], 'EX', ttl, 'NX') then
      out[1] = out[1] + 1
      local mid = redis.call('HGET', index, ARGV[i])
      if mid then out[#out + 1] = mid end
    end
    k = k + 1
  end
  pos = pos + 2 + 2 * count
end
return out
"""


# KEYS the keys the commands touch (one shard); ARGV commands, each as its length then the
# command and its arguments. Runs them in order, atomically: a cluster's MULTI/EXEC (see
# mta.store.base.StoreBase._multi).
APPLY = """
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 0
"""

# KEYS keys (one slot); ARGV[1] ttl (s), then one value per key: SET … EX for each.
SET_MANY = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1])
end
return 0
"""

# KEYS (lease, due) per shard; ARGV token, due_ms. Gives back every claim of one round (the
# lease entries scored with its token), e.g. when the claim's answer was lost in an outage.
RELEASE_TOKEN = """
for g = 1, #KEYS / 2 do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[2 * g - 1], ARGV[1], ARGV[1])
  for c = 1, #ids, 1000 do
    local part, again = {}, {}
    for i = c, math.min(c + 999, #ids) do
      part[#part + 1] = ids[i]
      again[#again + 1] = ARGV[2]
      again[#again + 1] = ids[i]
    end
    redis.call('ZREM', KEYS[2 * g - 1], unpack(part))
    redis.call('ZADD', KEYS[2 * g], unpack(again))
  end
end
return 0
"""
