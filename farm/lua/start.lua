-- After job.lua. A: worker, now, record ttl, lease holder, lease seconds, max attempts, holder
-- to take over ('' = none), the give-up moves (moves.lua). Answers the status afterwards:
-- 'running' means render it; 'busy' means a live worker holds it; 'canceled' or 'failed' that
-- it ended now; 'ended:<status>' that it had ended before; 'missing' that it is gone.
local st, tenant, attempts = unpack(redis.call('HMGET', JOB, 'status', 'tenant', 'attempts'))
if not st then return 'missing' end
local to = MOVES[st]
if not to then return 'ended:'..st end
if is_final(to) then
  finish(tenant, st, to, A[2], tonumber(A[3]))
  return to
end
if st == 'running' then
  local holder = redis.call('GET', LEASE)
  if holder and holder ~= A[7] then return 'busy' end
end
local give_up = moves(A[8])[st]
if give_up and tonumber(attempts or '0') >= tonumber(A[6]) then
  worker_lost(attempts)
  finish(tenant, st, give_up, A[2], tonumber(A[3]))
  return give_up
end
if to ~= st then move(tenant, st, to) end
redis.call('HSET', JOB, 'worker', A[1], 'started_at', A[2])
redis.call('HINCRBY', JOB, 'attempts', 1)
redis.call('SET', LEASE, A[4], 'PX', math.floor(tonumber(A[5]) * 1000))
return to
