-- Stores new queued jobs, all or none, within the tenant's quota of queued jobs.
-- KEYS[1] the tenant's queued set, KEYS[2] the tenant's job index, KEYS[3] the set of queued
--   jobs, KEYS[3 + i] the record of job i (1 to n).
-- ARGV: quota, number of jobs n, number of fields F, the F field names, then F values per job
--   (the first one its id). Answers {1, queued before} or {0, queued} past the quota.
local quota, n, f = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local queued = redis.call('SCARD', KEYS[1])
if queued + n > quota then return {0, queued} end
for i = 0, n - 1 do
  local base = 3 + f + i * f
  local id = ARGV[base + 1]
  local args = {}
  for j = 1, f do
    args[#args + 1] = ARGV[3 + j]
    args[#args + 1] = ARGV[base + j]
  end
  redis.call('HSET', KEYS[4 + i], unpack(args))
  redis.call('ZADD', KEYS[2], 0, id)
  redis.call('SADD', KEYS[1], id)
  redis.call('SADD', KEYS[3], id)
end
return {1, queued}
