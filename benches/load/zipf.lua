-- wrk script for the load benchmark's Zipf scenario (benches/load/run.sh).
-- Usage: wrk ... -s zipf.lua URL -- <ids file> [s]
-- Every container of the ids file has the assets slide-1 .. slide-4; the
-- script ranks all those asset paths in a fixed pseudo-random order and
-- draws each request's path from a Zipf(s) distribution over the ranks
-- (P(rank k) ~ 1/k^s), by binary search in a precomputed CDF. Seeds are
-- fixed, so every system gets the same sequence of paths.

local paths = {}
local cdf = {}
local n = 0

function init(args)
  local file = args[1] or error("zipf.lua: pass the ids file after --")
  local s = tonumber(args[2] or "1.0")
  for id in io.lines(file) do
    if #id > 0 then
      for a = 1, 4 do
        n = n + 1
        paths[n] = "/v1/content/" .. id .. "/assets/slide-" .. a
      end
    end
  end
  if n == 0 then error("zipf.lua: no ids in " .. file) end
  -- Fixed shuffle: popularity is not correlated with position in the file.
  math.randomseed(20261127)
  for i = n, 2, -1 do
    local j = math.random(i)
    paths[i], paths[j] = paths[j], paths[i]
  end
  local total = 0
  for k = 1, n do
    total = total + 1 / (k ^ s)
    cdf[k] = total
  end
  for k = 1, n do cdf[k] = cdf[k] / total end
  math.randomseed(424242)
end

function request()
  local r = math.random()
  local lo, hi = 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < r then lo = mid + 1 else hi = mid end
  end
  return wrk.format(nil, paths[lo])
end
