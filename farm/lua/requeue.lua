-- After job.lua. A: now, record ttl, max attempts, holder to take over ('' = none), the
-- give-up moves (moves.lua). A job whose lease has run out goes back to the queue, or ends:
-- answers 'requeued', 'canceled', 'failed', 'held' (a live lease exists), 'missing', or the
-- status of a job it does not move.
local st, tenant, attempts = unpack(redis.call('HMGET', JOB, 'status', 'tenant', 'attempts'))
if not st then
  for from in pairs(MOVES) do redis.call('SREM', ACTIVE[from], ID) end
  return 'missing'
end
local to = MOVES[st]
if not to then return st end
local holder = redis.call('GET', LEASE)
if holder and holder ~= A[4] then return 'held' end
redis.call('DEL', LEASE)
if is_final(to) then
  finish(tenant, st, to, A[1], tonumber(A[2]))
  return to
end
local give_up = moves(A[5])[st]
if give_up and tonumber(attempts or '0') >= tonumber(A[3]) then
  worker_lost(attempts)
  finish(tenant, st, give_up, A[1], tonumber(A[2]))
  return give_up
end
redis.call('HSET', JOB, 'progress', '')
move(tenant, st, to)
return 'requeued'
