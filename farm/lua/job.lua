-- What the scripts that move one job share (farm/records.py puts it, after moves.lua, before
-- each of them). Every key comes through KEYS, built by farm/redis_keys.py:
--   KEYS[1] the job's record, KEYS[2] its event stream, KEYS[3] its cancel flag,
--   KEYS[4] its lease, KEYS[5] the finished-jobs counters (STATS_KEY),
--   KEYS[6], KEYS[7], KEYS[8] the sets of queued, running and canceling jobs.
-- ARGV[1], ARGV[2]: the prefix and suffix of a tenant's queued set. A job's tenant is known
--   only from its record, read inside the script, so that one key is built here, from these
--   parts passed in (farm.redis_keys.TENANT_QUEUED_PARTS).
-- ARGV[3]: events kept per job. ARGV[4]: the operation's moves (moves.lua). ARGV[5]: the job
--   id. The script's own arguments follow, as A[1], A[2], ...
local JOB, EVENTS, CANCEL, LEASE, STATS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ACTIVE = {queued = KEYS[6], running = KEYS[7], canceling = KEYS[8]}
local LOG_LENGTH = tonumber(ARGV[3])
local MOVES = moves(ARGV[4])
local ID = ARGV[5]
local A = {unpack(ARGV, 6)}

local function tenant_queued(tenant)
  return ARGV[1]..tenant..ARGV[2]
end
local function emit(event, data)
  redis.call('XADD', EVENTS, 'MAXLEN', LOG_LENGTH, '*', 'event', event, 'data', data)
end
local function publish(status)
  emit('status', '{"status":"'..status..'"}')
end
local function leave_active(tenant, status)
  redis.call('SREM', ACTIVE[status], ID)
  if status == 'queued' then redis.call('SREM', tenant_queued(tenant), ID) end
end
-- From one active status to another.
local function move(tenant, old, new)
  leave_active(tenant, old)
  redis.call('SADD', ACTIVE[new], ID)
  if new == 'queued' then redis.call('SADD', tenant_queued(tenant), ID) end
  redis.call('HSET', JOB, 'status', new)
  publish(new)
end
-- From an active status to a final one: the record and its events now expire.
local function finish(tenant, old, new, now, ttl)
  leave_active(tenant, old)
  redis.call('HSET', JOB, 'status', new, 'finished_at', now)
  redis.call('HINCRBY', STATS, new, 1)
  redis.call('DEL', CANCEL, LEASE)
  publish(new)
  redis.call('EXPIRE', JOB, ttl)
  redis.call('EXPIRE', EVENTS, ttl)
end
local function is_final(status)
  return ACTIVE[status] == nil
end
local function worker_lost(attempts)
  redis.call('HSET', JOB, 'error', '{"code":"worker_lost","message":"the job was started '
    ..attempts..' times and its worker died every time: it may be too large for the '
    ..'workers (try a smaller canvas or fewer regions), or the workers are failing"}')
end
