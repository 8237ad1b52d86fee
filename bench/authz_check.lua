-- authz_check.lua - POST /v1/authz/check for bench/authz.sh: "may I read a post whose owner is
-- BENCH_IDENTITY?", asked with the identity's own tst_ token (given with -H Authorization), so
-- that the role's predicate `resource.data.owner == identity.id` is evaluated every time.
-- With BENCH_COUNT=1, counts the answers that are a 200 with "allowed":true, and every other one.
local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
end

local owner = os.getenv("BENCH_IDENTITY") or "bench"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"action":"read","resource":"collections/posts","context":{"resource":{"data":{"owner":"'
  .. owner .. '"}}}}'

-- Counting runs a Lua callback per answer inside wrk, which shares the server's cores: only
-- the verification run (BENCH_COUNT=1) counts; the timed run sends the same request without it.
if os.getenv("BENCH_COUNT") == "1" then
  function init(args)
    allowed, other = 0, 0
  end

  function response(status, headers, body)
    if status == 200 and body:find('"allowed":true', 1, true) then
      allowed = allowed + 1
    else
      other = other + 1
    end
  end

  function done(summary, latency, requests)
    local a, o = 0, 0
    for _, t in ipairs(threads) do
      a = a + t:get("allowed")
      o = o + t:get("other")
    end
    io.write(string.format("BENCH check_allowed=%d check_other=%d\n", a, o))
  end
end
