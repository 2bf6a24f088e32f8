-- `now`: Redis server time in ms, so that API hosts with different clocks agree.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
