"""The two Lua scripts of the Redis backend. Semantics mirror ``MemoryBackend`` line by line.

Arguments and replies travel as one packed string each (fields separated by ``|``): encoding a few
hundred RESP arguments and parsing a few hundred reply elements costs more in redis-py than the whole
script costs in Redis.

RESERVE: KEYS[i] is the counter of check i. ARGV[1] = "1" to treat missing budget counters as zero
(after seeding), ARGV[2] = 7 fields per check:
kind (w|s|c), limit (-1 = none), amount, p1, p2, check_only (0|1), seedable (0|1)
  w (window):  p1 = window ms, p2 = bucket ms
  s (slots):   p1 = lease ms, p2 = member (request id); the sorted set scores are lease expiries
  c (counter): p1 = ttl ms (0 = none), p2 = retry ms (-1 = until the key expires)
Every check is evaluated before anything is written, so a refusal charges nothing.
Replies "1|used|reset_ms|bucket|..." (3 fields per check), "0|index|retry_ms|used" on refusal,
"-1|index|..." when budget counters must first be seeded from the ledger.
The clock is Redis's own (TIME), so every worker and every machine agrees on the window.
"""

RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local allow_missing = ARGV[1] == '1'
local f = {}
for field in string.gmatch(ARGV[2], '[^|]+') do f[#f + 1] = field end
local n = #KEYS
local function num(x) return string.format('%.0f', x) end
local used, reset, stale, missing = {}, {}, {}, {}
for i = 1, n do
  local a = (i - 1) * 7
  local kind, limit, amount = f[a + 1], tonumber(f[a + 2]), tonumber(f[a + 3])
  local key = KEYS[i]
  if kind == 'w' then
    local window, bms = tonumber(f[a + 4]), tonumber(f[a + 5])
    local nb = math.floor(window / bms) + 1
    local cur = math.floor(now / bms)
    local flat = redis.call('HGETALL', key)
    local total, oldest, dead, first = 0, cur, {}, cur - nb + 1
    for j = 1, #flat, 2 do
      local b = tonumber(flat[j])
      if b >= first then
        total = total + tonumber(flat[j + 1])
        if b < oldest then oldest = b end
      else
        dead[#dead + 1] = flat[j]
      end
    end
    if limit >= 0 and total + amount > limit then
      -- Refused: find when enough of the oldest buckets leave the window for this request to fit.
      local alive, values = {}, {}
      for j = 1, #flat, 2 do
        local b = tonumber(flat[j])
        if b >= first then
          alive[#alive + 1] = b
          values[b] = tonumber(flat[j + 1])
        end
      end
      table.sort(alive)
      local freed, retry = 0, window
      for _, b in ipairs(alive) do
        freed = freed + values[b]
        if total - freed + amount <= limit then
          retry = (b + nb) * bms - now
          break
        end
      end
      return '0|' .. i .. '|' .. num(math.max(retry, 1)) .. '|' .. num(total)
    end
    used[i], reset[i], stale[i] = total, (oldest + nb) * bms - now, dead
  elseif kind == 's' then
    -- Leases past their expiry belong to requests whose worker died (a live one renews its lease).
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local count = redis.call('ZCARD', key)
    if limit >= 0 and count + 1 > limit then
      -- The earliest lease expiry: when a slot frees for sure if its holder is dead (the lease if none).
      local retry = tonumber(f[a + 4])
      local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if first[2] then retry = tonumber(first[2]) - now end
      return '0|' .. i .. '|' .. num(math.max(retry, 1)) .. '|' .. count
    end
    used[i], reset[i] = count, 0
  else
    local v = redis.call('GET', key)
    if not v and f[a + 7] == '1' and not allow_missing then
      missing[#missing + 1] = i
    else
      v = tonumber(v or 0)
      if limit >= 0 and v + amount > limit then
        local retry = tonumber(f[a + 5])
        if retry < 0 then
          retry = math.max(redis.call('PTTL', key), 1000)
        end
        return '0|' .. i .. '|' .. num(retry) .. '|' .. num(v)
      end
      used[i], reset[i] = v, 0
    end
  end
end
if #missing > 0 then
  return '-1|' .. table.concat(missing, '|')
end
local out = {'1'}
for i = 1, n do
  local a = (i - 1) * 7
  local kind, amount = f[a + 1], f[a + 3]
  local key = KEYS[i]
  local bucket = 0
  if f[a + 6] ~= '1' then
    if kind == 'w' then
      local window, bms = tonumber(f[a + 4]), tonumber(f[a + 5])
      bucket = math.floor(now / bms)
      -- A new bucket (first charge this bucket) pushes the expiry out; later charges need not.
      if redis.call('HINCRBY', key, num(bucket), amount) == tonumber(amount) then
        redis.call('PEXPIRE', key, window + 2 * bms)
      end
      if #stale[i] > 0 then redis.call('HDEL', key, unpack(stale[i])) end
    elseif kind == 's' then
      local ttl = tonumber(f[a + 4])
      redis.call('ZADD', key, now + ttl, f[a + 5])
      redis.call('PEXPIRE', key, ttl)
    else
      -- The expiry is set when the counter is created (budget: window end + a day; session: its lifetime).
      local ttl = tonumber(f[a + 4])
      if redis.call('INCRBY', key, amount) == tonumber(amount) and ttl > 0 then redis.call('PEXPIRE', key, ttl) end
    end
  end
  out[#out + 1] = num(used[i])
  out[#out + 1] = num(reset[i])
  out[#out + 1] = num(bucket)
end
return table.concat(out, '|')
"""

# SETTLE: KEYS[i] per op; ARGV[1] packs 3 fields per op: kind, delta, p (bucket for w, member for s).
# A window bucket or counter that already expired is left alone (nothing to give back to).
SETTLE = """
local f = {}
for field in string.gmatch(ARGV[1], '[^|]+') do f[#f + 1] = field end
for i = 1, #KEYS do
  local a = (i - 1) * 3
  local kind, delta, p = f[a + 1], f[a + 2], f[a + 3]
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

# RENEW: KEYS[i] is the slot set of lease i; ARGV[1] packs 2 fields per lease: lease ms, member.
# One call per worker per renewal interval extends every lease it holds. A lease already past its expiry
# is not renewed (it may have been reclaimed and given to another request), nor is a released one: their
# indexes are returned after a leading "0" (the caller ignores the ones it released meanwhile).
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = {}
for field in string.gmatch(ARGV[1], '[^|]+') do f[#f + 1] = field end
local lost = {'0'}
for i = 1, #KEYS do
  local ttl, member = tonumber(f[2 * i - 1]), f[2 * i]
  local key = KEYS[i]
  local score = redis.call('ZSCORE', key, member)
  if score and tonumber(score) > now then
    redis.call('ZADD', key, now + ttl, member)
    if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  else
    lost[#lost + 1] = i
  end
end
return table.concat(lost, '|')
"""
