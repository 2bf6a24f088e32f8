-- After job.lua. A: tenant ('' = any), now, record ttl, cancel-flag ttl.
-- Answers the status afterwards ('canceled' or 'canceling'), 'missing' (none, or another
-- tenant's), or 'final:<status>' for a job that had already ended.
local st, tenant = unpack(redis.call('HMGET', JOB, 'status', 'tenant'))
if not st or (A[1] ~= '' and tenant ~= A[1]) then return 'missing' end
local to = MOVES[st]
if not to then return 'final:'..st end
if to == st then return to end
if is_final(to) then
  finish(tenant, st, to, A[2], tonumber(A[3]))
else
  move(tenant, st, to)
  redis.call('SET', CANCEL, '1', 'EX', tonumber(A[4]))
end
return to
