-- Renews a lease we still hold. KEYS[1] the job's lease. ARGV: holder, lease seconds.
-- Answers 1, or 0 when it is no longer ours.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[2]) * 1000))
return 1
