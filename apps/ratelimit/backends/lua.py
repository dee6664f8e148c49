"""The two Lua scripts of the Redis backend. Semantics mirror ``MemoryBackend`` line by line.

RESERVE: KEYS[i] is the counter of check i. ARGV[1] = number of checks, ARGV[2] = "1" to treat missing
budget counters as zero (after seeding), then 7 values per check:
kind (w|s|c), limit (-1 = none), amount, p1, p2, check_only (0|1), seedable (0|1)
  w (window):  p1 = window ms, p2 = bucket ms
  s (slots):   p1 = slot ttl ms, p2 = member (request id)
  c (counter): p1 = ttl ms (0 = none), p2 = retry ms (-1 = until the key expires)
Every check is evaluated before anything is written, so a refusal charges nothing.
Returns {1, used, reset_ms, bucket, ...} per check; {0, index, retry_ms, used} on refusal;
{-1, index...} when budget counters must first be seeded from the ledger.
The clock is Redis's own (TIME), so every worker and every machine agrees on the window.
"""

RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local allow_missing = ARGV[2] == '1'
local used, reset, stale, missing = {}, {}, {}, {}
for i = 1, n do
  local a = 2 + (i - 1) * 7
  local kind, limit, amount = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local key = KEYS[i]
  if kind == 'w' then
    local window, bms = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
    local nb = math.floor(window / bms) + 1
    local cur = math.floor(now / bms)
    local flat = redis.call('HGETALL', key)
    local total, alive, values, dead = 0, {}, {}, {}
    for j = 1, #flat, 2 do
      local b, v = tonumber(flat[j]), tonumber(flat[j + 1])
      if b > cur - nb then
        total = total + v
        alive[#alive + 1] = b
        values[b] = v
      else
        dead[#dead + 1] = flat[j]
      end
    end
    table.sort(alive)
    if limit >= 0 and total + amount > limit then
      local freed, retry = 0, window
      for _, b in ipairs(alive) do
        freed = freed + values[b]
        if total - freed + amount <= limit then
          retry = (b + nb) * bms - now
          break
        end
      end
      return {0, i, math.max(retry, 1), total}
    end
    local oldest = alive[1] or cur
    used[i], reset[i], stale[i] = total, (oldest + nb) * bms - now, dead
  elseif kind == 's' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local count = redis.call('ZCARD', key)
    if limit >= 0 and count + 1 > limit then
      return {0, i, 1000, count}
    end
    used[i], reset[i] = count, 0
  else
    local v = redis.call('GET', key)
    if not v and ARGV[a + 7] == '1' and not allow_missing then
      missing[#missing + 1] = i
    else
      v = tonumber(v or 0)
      if limit >= 0 and v + amount > limit then
        local retry = tonumber(ARGV[a + 5])
        if retry < 0 then
          retry = math.max(redis.call('PTTL', key), 1000)
        end
        return {0, i, retry, v}
      end
      used[i], reset[i] = v, 0
    end
  end
end
if #missing > 0 then
  local out = {-1}
  for _, i in ipairs(missing) do out[#out + 1] = i end
  return out
end
local out = {1}
for i = 1, n do
  local a = 2 + (i - 1) * 7
  local kind, amount = ARGV[a + 1], tonumber(ARGV[a + 3])
  local key = KEYS[i]
  local bucket = 0
  if ARGV[a + 6] ~= '1' then
    if kind == 'w' then
      local window, bms = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
      bucket = math.floor(now / bms)
      redis.call('HINCRBY', key, bucket, amount)
      if #stale[i] > 0 then redis.call('HDEL', key, unpack(stale[i])) end
      redis.call('PEXPIRE', key, window + 2 * bms)
    elseif kind == 's' then
      local ttl = tonumber(ARGV[a + 4])
      redis.call('ZADD', key, now + ttl, ARGV[a + 5])
      redis.call('PEXPIRE', key, ttl)
    else
      redis.call('INCRBY', key, amount)
      local ttl = tonumber(ARGV[a + 4])
      if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
    end
  end
  out[#out + 1] = used[i]
  out[#out + 1] = reset[i]
  out[#out + 1] = bucket
end
return out
"""

# SETTLE: KEYS[i] per op; ARGV: 3 values per op: kind, delta, p (bucket for w, member for s).
# A window bucket or counter that already expired is left alone (nothing to give back to).
SETTLE = """
for i = 1, #KEYS do
  local a = (i - 1) * 3
  local kind, delta, p = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
  local key = KEYS[i]
  if kind == 's' then
    redis.call('ZREM', key, p)
  elseif kind == 'w' then
    if redis.call('HEXISTS', key, p) == 1 then redis.call('HINCRBY', key, p, delta) end
  else
    if redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, delta) end
  end
end
return #KEYS
"""
