-- The moves of one operation, from farm/states.py (farm.states.moves_arg): 'from>to' pairs
-- joined by commas, read into a table from status -> status. A status with no entry is one
-- the operation refuses.
local function moves(spec)
  local t = {}
  for from, to in string.gmatch(spec, '(%w+)>(%w+)') do t[from] = to end
  return t
end
