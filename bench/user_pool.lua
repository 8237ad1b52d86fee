-- user_pool.lua - GET /user with a pool of distinct access tokens, round-robin.
-- env BENCH_TOKENS: file with one access token a line; BENCH_THREADS: wrk -t.
-- Requests are formatted once in init(), so the per-request client cost is the same
-- as a static request; threads start at different offsets of the pool.
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  reqs = {}
  for line in io.lines(os.getenv("BENCH_TOKENS")) do
    if #line > 0 then
      reqs[#reqs + 1] = wrk.format("GET", "/user", { ["Authorization"] = "Bearer " .. line })
    end
  end
  local nth = tonumber(os.getenv("BENCH_THREADS")) or 1
  i = (id * math.floor(#reqs / nth)) % #reqs
end

function request()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
