-- Deletes an Idempotency-Key claim only if it is still ours and still pending (a
-- compare-and-delete; api/idempotency.py). KEYS[1] the entry. ARGV: our claim's token.
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['token'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
