-- After job.lua. A: progress JSON, the same without its preview (for the event log). Only a
-- job the progress moves allow (running or canceling) takes it. Answers 1, or 0 when refused.
local st = redis.call('HGET', JOB, 'status')
if not st or not MOVES[st] then return 0 end
redis.call('HSET', JOB, 'progress', A[1])
emit('progress', A[2])
return 1
